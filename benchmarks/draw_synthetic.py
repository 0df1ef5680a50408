"""A picture of the synthetic training data next to the old phantom: docs/synthetic_data.png.

    python benchmarks/draw_synthetic.py [--out docs/synthetic_data.png] [--search 15]

One row per case: the old phantom (held-out seed 1000000, 192×192, drawn on the display grid), then synthetic
cases from the held-out seeds (never used for training), one per scene family: a short-axis slice, long-axis
4-, 3- and 2-chamber views and a textured-shapes scene. The long-axis view is drawn from the seed, so the script
walks the held-out seeds (at most --search of them per family) for the first case of each view. Each row shows
frame 0 (ED), the ES frame and the radial power spectrum of the whole cine (log scale), with the acquired
fractions of the display band marked and the phantom's spectrum for reference.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from cmrvsr_fast.data.acquisition import Acquisition, radial_power_spectrum
from cmrvsr_fast.data.phantom import generate
from cmrvsr_fast.data.synth import HELD_OUT_SEEDS, SynthCase, synth_case

PHANTOM_SEED = 1_000_000
PHANTOM_SIZE = 192
# (kind, description wanted) per synthetic row, in order.
WANTED = (
    ("sax", "short-axis"),
    ("lax", "long-axis 4ch"),
    ("lax", "long-axis 3ch"),
    ("lax", "long-axis 2ch"),
    ("texture", "textured shapes"),
)
FILTER_NAMES = {"none": "no filter", "hamming": "Hamming", "fermi": "Fermi"}


def protocol_text(acquisition: Acquisition) -> str:
    """A protocol in short, e.g. 'RO 74 % × PE 55 % (PE cols), PF 0.8, Hamming, SNR 30'."""
    axis = "rows" if acquisition.phase_axis == 0 else "cols"
    partial = f"PF {acquisition.partial_fourier:.2f}" if acquisition.partial_fourier < 1 else "no PF"
    return (
        f"RO {100 * acquisition.readout_fraction:.0f} % × PE {100 * acquisition.phase_fraction:.0f} % "
        f"(PE {axis}), {partial}, {FILTER_NAMES[acquisition.kspace_filter]}, SNR {acquisition.snr:.0f}"
    )


def find_cases(search: int) -> list[tuple[int, SynthCase]]:
    """The first held-out case of each wanted description, trying at most `search` seeds per row."""
    found: dict[str, tuple[int, SynthCase]] = {}
    for kind, wanted in WANTED:
        if wanted in found:
            continue
        for seed in range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + search):
            case = synth_case(seed, kind=kind)
            found.setdefault(case.description, (seed, case))  # keep other views seen on the way
            if wanted in found:
                break
        else:
            raise SystemExit(f"no '{wanted}' case among {search} held-out seeds: raise --search")
    return [found[wanted] for _, wanted in WANTED]


def draw(out: Path, search: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    phantom = generate(PHANTOM_SEED, (PHANTOM_SIZE, PHANTOM_SIZE), 30)
    phantom_cine = phantom.cine[0]
    rows = [
        (
            f"old phantom, seed {PHANTOM_SEED}: short-axis drawn on the {PHANTOM_SIZE}² display grid, Rician noise",
            phantom_cine,
            phantom.es,
            None,
        )
    ]
    for seed, case in find_cases(search):
        frames, size = case.cine.shape[0], case.cine.shape[-1]
        title = f"synth seed {seed}: {case.description}, {size}², {frames} fr — {protocol_text(case.acquisition)}"
        rows.append((title, case.cine, case.es, case.acquisition))

    spectra = [radial_power_spectrum(cine, bins=48) for _, cine, _, _ in rows]
    ref_k, ref_power = spectra[0]  # the old phantom's, drawn in every synthetic row for reference
    highest = max(float(power.max()) for _, power in spectra)
    lowest = min(float(power.min()) for _, power in spectra)
    plt.rcParams.update({"font.size": 7})
    fig = plt.figure(figsize=(9, 12), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.02, w_pad=0.02)
    subfigs = fig.subfigures(len(rows), 1, hspace=0.01)
    for row, (subfig, (title, cine, es, acquisition)) in enumerate(zip(subfigs, rows, strict=True)):
        k, power = spectra[row]
        subfig.suptitle(title, fontsize=8, fontweight="bold" if acquisition is None else "normal")
        axes = subfig.subplots(1, 3, width_ratios=[1, 1, 1.5], gridspec_kw={"wspace": 0.02})
        for ax, frame, label in ((axes[0], 0, "ED (frame 0)"), (axes[1], es, f"ES (frame {es})")):
            ax.imshow(cine[frame], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            box = {"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0}
            ax.text(0.02, 0.98, label, transform=ax.transAxes, ha="left", va="top", color="yellow", bbox=box)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[2]
        if acquisition is not None:
            ax.semilogy(ref_k, ref_power, color="0.65", lw=1, label="old phantom")
            for fraction, style, name in (
                (acquisition.readout_fraction, "--", "RO"),
                (acquisition.phase_fraction, ":", "PE"),
            ):
                ax.axvline(fraction, color="tab:red", ls=style, lw=0.9, label=f"{name} acquired")
        ax.semilogy(k, power, color="black", lw=1.2, label="this cine")
        ax.set_xlim(0, 1)
        ax.set_ylim(lowest / 3, highest * 3)
        if row == len(rows) - 1:
            ax.set_xlabel("|k| / Nyquist", labelpad=1)
        ax.set_ylabel("radial power", labelpad=1)
        ax.tick_params(labelsize=6, pad=1)
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        ax.legend(fontsize=5.5, loc="upper right", handlelength=1.8, borderpad=0.3, labelspacing=0.2)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    # A 256-colour palette: the figure is nearly all grey levels, and the file stays small.
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB, {image.width}×{image.height})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_data.png"))
    parser.add_argument("--search", type=int, default=15, help="held-out seeds tried per row at most (default 15)")
    args = parser.parse_args(argv)
    draw(args.out, args.search)
    return 0


if __name__ == "__main__":
    sys.exit(main())
