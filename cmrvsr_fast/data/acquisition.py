"""A scanner's acquisition of a finely drawn scene: what makes synthetic HR frames look like clinical cines.

Clinical cines are acquired at a matrix smaller than the one they are displayed at (phase-encode resolution
usually lower than read-out, sometimes partial Fourier), windowed in k-space by a vendor filter, noisy, and
zero-filled to the display matrix. Their spectrum therefore ends inside the display band, with a noise floor
beyond it from the magnitude reconstruction. A scene drawn on the display grid has none of that: it carries
power up to the Nyquist limit, which a network trained on it learns to invent on real images. `acquire` takes a
scene drawn at a finer grid than the display matrix through those steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.fft import fft2, fftshift, ifft2, ifftshift

KSPACE_FILTERS = ("none", "hamming", "fermi")


@dataclass(frozen=True)
class Acquisition:
    """One acquisition protocol, relative to the display matrix.

    readout_fraction, phase_fraction: acquired matrix / display matrix along each axis (e.g. 0.5 = acquired at
        half the display matrix and zero-filled, the common "interpolated" reconstruction).
    phase_axis: the image axis that is phase-encoded (0 = rows, 1 = columns).
    partial_fourier: fraction of the phase-encode lines acquired (1 = full; 5/8 … 1 as vendors offer).
    kspace_filter: "none", "hamming" (separable Hamming window over the acquired block) or "fermi" (a radial
        Fermi roll-off at the edge of the acquired block).
    snr: mean foreground signal of the reconstruction / standard deviation of the noise on the measured lines
        (before the k-space filter and the magnitude).
    """

    readout_fraction: float = 1.0
    phase_fraction: float = 1.0
    phase_axis: int = 1
    partial_fourier: float = 1.0
    kspace_filter: str = "none"
    snr: float = 40.0

    def __post_init__(self) -> None:
        if not (0 < self.readout_fraction <= 1 and 0 < self.phase_fraction <= 1):
            raise ValueError(
                f"acquired fractions must lie in (0, 1], got {self.readout_fraction}, {self.phase_fraction}"
            )
        if self.phase_axis not in (0, 1):
            raise ValueError(f"phase_axis must be 0 or 1, got {self.phase_axis}")
        if not 0.5 <= self.partial_fourier <= 1:
            raise ValueError(f"partial_fourier must lie in [0.5, 1], got {self.partial_fourier}")
        if self.kspace_filter not in KSPACE_FILTERS:
            raise ValueError(f"kspace_filter must be one of {KSPACE_FILTERS}, got {self.kspace_filter!r}")
        if self.snr <= 0:
            raise ValueError(f"snr must be positive, got {self.snr}")

    @classmethod
    def random(cls, rng: np.random.Generator) -> Acquisition:
        """Protocols in the range of clinical bSSFP cines: read-out 50–100 % and phase-encode 40–100 % of the
        display matrix (phase-encode never finer than read-out), either axis phase-encoded, partial Fourier
        5/8–1 in a third of the cases, a vendor k-space filter in two thirds, SNR 12–80."""
        phase = rng.uniform(0.4, 1.0)
        readout = max(rng.uniform(0.5, 1.0), phase)
        partial = rng.uniform(0.625, 1.0) if rng.random() < 1 / 3 else 1.0
        return cls(
            readout_fraction=float(readout),
            phase_fraction=float(phase),
            phase_axis=int(rng.integers(2)),
            partial_fourier=float(partial),
            kspace_filter=str(rng.choice(KSPACE_FILTERS, p=[1 / 3, 1 / 3, 1 / 3])),
            snr=float(np.exp(rng.uniform(np.log(12), np.log(80)))),
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _centred_fft(image: np.ndarray) -> np.ndarray:
    return fftshift(fft2(ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _centred_ifft(kspace: np.ndarray) -> np.ndarray:
    return fftshift(ifft2(ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _central_slice(full: int, keep: int) -> slice:
    """The `keep` central indices of a centred spectrum of length `full` (DC at full // 2)."""
    start = full // 2 - keep // 2
    return slice(start, start + keep)


def sampling_window(shape: tuple[int, int], acquisition: Acquisition) -> np.ndarray:
    """(H, W) weights on the display matrix's centred k-space: 0 where nothing was acquired, the k-space
    filter's weight where something was."""
    height, width = shape
    sizes = [0, 0]
    phase, readout = acquisition.phase_axis, 1 - acquisition.phase_axis
    sizes[readout] = max(2, round(acquisition.readout_fraction * shape[readout]))
    sizes[phase] = max(2, round(acquisition.phase_fraction * shape[phase]))
    axes = []
    for axis, (full, keep) in enumerate(zip(shape, sizes, strict=True)):
        weights = np.zeros(full)
        part = _central_slice(full, keep)
        offsets = (np.arange(keep) - keep // 2) / (keep / 2)  # −1 … 1 across the acquired block
        if acquisition.kspace_filter == "hamming":
            weights[part] = 0.54 + 0.46 * np.cos(np.pi * offsets)
        else:
            weights[part] = 1.0
        if axis == phase and acquisition.partial_fourier < 1:
            # Lines past the acquired fraction are never measured; zero-filled reconstruction.
            skipped = keep - int(np.ceil(acquisition.partial_fourier * keep))
            weights[part.stop - skipped : part.stop] = 0.0
        axes.append((weights, offsets, part))
    window = np.outer(axes[0][0], axes[1][0])
    if acquisition.kspace_filter == "fermi":
        ky = np.zeros(height)
        kx = np.zeros(width)
        ky[axes[0][2]] = axes[0][1]
        kx[axes[1][2]] = axes[1][1]
        radius = np.hypot(ky[:, None], kx[None, :])
        window = window / (1 + np.exp((radius - 0.9) / 0.04))
    return window


def acquire(
    scene: np.ndarray, display: tuple[int, int], acquisition: Acquisition, rng: np.random.Generator
) -> np.ndarray:
    """(T, h, w) scene drawn on a grid finer than `display` (same field of view) -> (T, H, W) magnitude images
    at the display matrix, float64, in the scene's intensity units.

    The display matrix's k-space is the central (H, W) block of the scene's; within it only the acquired block
    is kept (weighted by the k-space filter), complex Gaussian noise is added where lines were acquired, and the
    zero-filled spectrum is reconstructed; the magnitude makes the noise Rician."""
    frames = np.asarray(scene, dtype=np.float64)
    height, width = display
    fine_h, fine_w = frames.shape[-2:]
    if fine_h < height or fine_w < width:
        raise ValueError(f"the scene ({fine_h}×{fine_w}) must be at least the display matrix ({height}×{width})")
    # An ortho spectrum cropped to fewer samples reconstructs an image brighter by sqrt of the ratio: undo it.
    gain = np.sqrt(height * width / (fine_h * fine_w))
    kspace = _centred_fft(frames)[..., _central_slice(fine_h, height), _central_slice(fine_w, width)] * gain
    window = sampling_window(display, acquisition)
    clean = _centred_ifft(kspace * window)
    foreground = np.abs(clean) > 0.1 * np.abs(clean).max()
    signal = float(np.abs(clean)[foreground].mean()) if foreground.any() else 1.0
    sigma = signal / acquisition.snr
    # White noise of std sigma in k-space (ortho) is white noise of std sigma in a fully sampled image; the
    # measured lines carry it, and the k-space filter weights it with the signal.
    noise = rng.normal(0.0, sigma, (2, *kspace.shape))
    noisy = clean + _centred_ifft((noise[0] + 1j * noise[1]) * window)
    return np.abs(noisy)


def radial_power_spectrum(frames: np.ndarray, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Mean power of the centred 2-D spectrum of (…, H, W) frames in `bins` rings of |k| / (Nyquist radius)
    from 0 to 1 -> (ring centres, mean power per ring), averaged over every leading axis. The mean of each
    frame is removed first."""
    data = np.asarray(frames, dtype=np.float64)
    data = data - data.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(_centred_fft(data)) ** 2
    power = power.reshape(-1, *power.shape[-2:]).mean(axis=0)
    height, width = power.shape
    ky = (np.arange(height) - height // 2) / (height / 2)
    kx = (np.arange(width) - width // 2) / (width / 2)
    radius = np.hypot(ky[:, None], kx[None, :])
    edges = np.linspace(0, 1, bins + 1)
    which = np.digitize(radius, edges) - 1
    inside = (which >= 0) & (which < bins)
    sums = np.bincount(which[inside], power[inside], minlength=bins)
    counts = np.bincount(which[inside], minlength=bins)
    return (edges[:-1] + edges[1:]) / 2, sums / np.maximum(counts, 1)
