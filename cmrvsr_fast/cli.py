"""`cmrvsr-fast`: the command line, a thin shell over the Python API.

Exit codes: 0 done; 2 bad input or usage (the message names the file or option and the reason); 3 (upscale)
some series failed, the others written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from cmrvsr_fast._version import __version__
from cmrvsr_fast.atomic import atomic_write_text
from cmrvsr_fast.data.records import load_records, training_records
from cmrvsr_fast.evaluation.evaluate import evaluate, format_table
from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH
from cmrvsr_fast.inference.upscaler import default_weights_path, load, resolve_device
from cmrvsr_fast.io.errors import DataError
from cmrvsr_fast.jobs import demo, phantoms, upscale
from cmrvsr_fast.model.checkpoint import NORMALISATION, load_checkpoint, model_chooser
from cmrvsr_fast.model.zoo import names as zoo_names
from cmrvsr_fast.ops.backends import PAIRED_BACKENDS, BackendUnavailable

EXIT_OK, EXIT_BAD_INPUT = 0, 2


class UsageError(ValueError):
    """Bad arguments or input: reported in one line, exit code 2."""


def run_eval(args: argparse.Namespace) -> int:
    records = load_records(args.data, args.size, args.frames, args.limit)
    chooser = model_chooser(args.weights, args.preset)
    rows = evaluate(records, args.scale, chooser, args.ssim, str(resolve_device(args.device)), progress=not args.quiet)
    print(format_table(rows))
    if args.json:
        body = {
            "command": "eval",
            "version": __version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "data": args.data,
            "ssim_variant": args.ssim,
            "rows": [r.as_dict() for r in rows],
        }
        atomic_write_text(args.json, json.dumps(body, indent=2) + "\n")
    return EXIT_OK


def run_phantom(args: argparse.Namespace) -> int:
    """Write phantom stacks as (S, T, H, W) .npy cines with a JSON sidecar (ED, ES, heart box) and a picture."""
    written = phantoms.write_phantoms(args.out, args.seed, args.count, args.size, args.frames, args.slices,
                                      args.overwrite)  # fmt: skip
    for base, phantom in written:
        print(f"{base}.npy: {args.slices}×{args.frames}×{args.size}×{args.size}, ED 0, ES {phantom.es}")
    return EXIT_OK


def run_train(args: argparse.Namespace) -> int:
    from cmrvsr_fast.data.datasets import make_sequences
    from cmrvsr_fast.model import zoo
    from cmrvsr_fast.training.allocator import keep_freed_memory
    from cmrvsr_fast.training.train import TrainOptions, train

    keep_freed_memory()  # a training process of its own: what the MALLOC_* variables used to do (allocator.py)
    config = zoo.config_for(args.preset)
    if zoo.parameter_count(zoo.build_model(config)) == 0:
        raise UsageError(f"--preset {args.preset}: has no parameters; there is nothing to train")
    budget = parse_budget(args)
    train_records, valid_records, description = training_records(args.data, args.size, args.count)
    norm = NORMALISATION["dsb15" if args.data.startswith("dsb") else "acdc"]
    options = TrainOptions(
        out=Path(args.out), steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, crop=args.crop,
        amp=args.amp, seed=args.seed, validate_every=args.validate_every, device=str(resolve_device(args.device)),
        workers=args.workers, resume=args.resume, init_from=args.init_from, normalisation=norm,
        data_description=description,
        extra_card={"preset": args.preset, **({"budget": budget} if budget else {})},
    )  # fmt: skip
    if args.init_from is not None and (args.resume or not args.init_from.is_file()):
        raise UsageError(f"--init-from {args.init_from}: " + ("not with --resume" if args.resume else "no such file"))
    if (Path(args.out) / "last.safetensors").exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{args.out} already holds a training run (use --resume to continue or --overwrite)")
    summary = train(
        config, make_sequences(train_records, config.scale), make_sequences(valid_records, config.scale), options
    )
    if summary.get("history"):
        last = summary["history"][-1]
        print(
            f"step {summary['steps']}: validation CardiacPSNR {last['cardiac_psnr']:.3f} dB "
            f"(bicubic {last['bicubic_cardiac_psnr']:.3f}), CardiacSSIM {last['cardiac_ssim']:.4f} "
            f"(bicubic {last['bicubic_cardiac_ssim']:.4f}); checkpoints in {args.out}"
        )
    return EXIT_OK


def parse_budget(args: argparse.Namespace) -> dict | None:
    """--budget STEPS[xBATCH]: a fixed number of optimisation steps (and clips per step) with no time limit, so
    that models trained with the same budget saw the same data in the same amount (benchmarks/zoo_train.py)."""
    if args.budget is None:
        return None
    steps, _, batch = args.budget.lower().partition("x")
    try:
        budget = {"steps": int(steps), "batch": int(batch) if batch else args.batch}
    except ValueError:
        raise UsageError(f"--budget {args.budget}: expected STEPS or STEPSxBATCH, e.g. 300x4") from None
    if min(budget.values()) < 1:
        raise UsageError(f"--budget {args.budget}: steps and batch must be positive")
    if args.minutes is not None:
        raise UsageError("--budget counts steps; it cannot be combined with --minutes")
    args.steps, args.batch = budget["steps"], budget["batch"]
    return budget | {"crop": args.crop, "clip_frames": 7, "data": args.data, "size": args.size}


def run_demo(args: argparse.Namespace) -> int:
    """The demo job (jobs/demo.py), its table and what it wrote."""
    result = demo.run_demo(args.out, args.weights, args.device, args.scale, args.size, args.frames, args.slices)
    print(f"phantom seed {result.seed}: {result.slices} slices × {result.frames} frames, {result.size}² HR -> "
          f"{result.size // result.scale}² LR (×{result.scale}); model {result.config} on {result.device}")  # fmt: skip
    print(format_table(result.rows))
    print(f"CardiacPSNR gain over bicubic: {result.cardiac_psnr_gain_db:+.2f} dB; ES estimated at frame "
          f"{result.es_estimated} (true {result.es_true})")  # fmt: skip
    print(f"wrote {result.out}/sr.nii.gz, bicubic.nii.gz, lr.nii.gz, hr.nii.gz and montage.png (rows ED, ES; "
          f"columns LR | bicubic | SR | HR | 3×|bicubic−HR| | 3×|SR−HR|) in {result.seconds:.1f} s")  # fmt: skip
    if args.json:
        body = {"command": "demo", "version": __version__, **result.as_dict()}
        atomic_write_text(args.json, json.dumps(body, indent=2, default=str) + "\n")
    return EXIT_OK


def check_report_path(args: argparse.Namespace) -> None:
    """--json goes neither into INPUT (nor over an INPUT file) nor into OUTPUT (a run that wrote nothing removes
    the OUTPUT it created, and a rerun would find it taken)."""
    report, source, output = (Path(p).resolve() for p in (args.json, args.input, args.output))
    if report == source or source in report.parents:
        raise UsageError(f"--json {args.json}: INPUT or inside it; results are never written into an input")
    if report == output or output in report.parents:
        raise UsageError(f"--json {args.json}: inside OUTPUT; put the report beside it")


def run_upscale_command(args: argparse.Namespace) -> int:
    """The upscale job; with --json, its report is written however the command ends (refusal, stop, error)."""
    if args.json is not None:
        check_report_path(args)  # refused: no report, since it would go where it may not
    report, code, message = upscale.JobReport(), upscale.EXIT_BAD_INPUT, ""
    try:
        code = _upscale_command(args, report)
        return code
    except (UsageError, DataError, ValueError, FileNotFoundError) as error:  # what main reports as bad input
        message = str(error)
        raise
    except KeyboardInterrupt as stop:
        code, message = interrupted_code(stop), interrupted_message(stop)
        raise
    except BaseException as error:
        code, message = upscale.EXIT_INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}"
        raise
    finally:
        if args.json is not None and not args.dry_run:
            try:
                upscale.write_job_report(args.json, report, code, message, args)
            except OSError as error:  # the report's failure must not hide the job's own outcome
                print(f"cmrvsr-fast upscale: --json {args.json}: not written ({error.strerror or error})",
                      file=sys.stderr)  # fmt: skip


def _upscale_command(args: argparse.Namespace, report: upscale.JobReport) -> int:
    if not 0.0 <= args.consistency <= 1.0:
        raise UsageError(f"--consistency {args.consistency}: must lie in [0, 1]")
    if args.resume and args.overwrite:
        raise UsageError("--resume keeps the series OUTPUT holds, --overwrite replaces them: choose one")
    resolve_device(args.device)  # an unknown device is a usage error before any work
    options = upscale.Options(
        output_format=args.format,
        ed=args.ed,
        es=args.es,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        shard=upscale.parse_shard(args.shard) if args.shard else None,
        progress=not args.quiet,
        consistency=args.consistency,
        resume=args.resume,
    )

    def make_upscaler():
        try:
            backend = PAIRED_BACKENDS.get(args.backend, args.backend)
            for flag, asked in (("--cuda-graph", args.cuda_graph), ("--cudnn-benchmark", args.cudnn_benchmark)):
                if asked and resolve_device(args.device).type != "cuda":
                    raise UsageError(f"{flag} needs a CUDA device (--device cuda, or auto on a machine with one)")
            upscaler = load(args.weights, device=args.device, precision=args.precision, backend=backend,
                            compile=args.compile, cuda_graph=args.cuda_graph, cudnn_benchmark=args.cudnn_benchmark,
                            scale=None if args.weights else args.scale)  # fmt: skip
        except BackendUnavailable as error:
            raise UsageError(f"--backend {args.backend}: {error}") from None
        if args.scale is not None and args.scale != upscaler.scale:
            raise UsageError(f"--scale {args.scale}: the weights are a ×{upscaler.scale} model")
        return upscaler

    upscale.run_upscale(Path(args.input), Path(args.output), make_upscaler, options, report)
    return report.exit_code


def run_export(args: argparse.Namespace) -> int:
    from cmrvsr_fast.export.manifest import SUFFIXES

    out = Path(args.out)
    if out.suffix != SUFFIXES[args.format]:
        raise UsageError(f"--out {out}: a {args.format} artifact is named *{SUFFIXES[args.format]}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out} exists; pass --overwrite to replace it")
    precision = args.precision or ("fp16" if args.format == "tensorrt" else "fp32")
    if args.format == "onnx" and precision != "fp32":
        raise UsageError("ONNX graphs are exported in fp32; reduced precision is chosen when TensorRT builds")
    model, card = load_checkpoint(args.weights or default_weights_path())
    shape = {"frames": args.frames, "height": args.height, "width": args.width}
    if args.format == "aoti":
        from cmrvsr_fast.export.aoti_export import export_aoti

        manifest = export_aoti(model, card, out, **shape, batch=args.batch or 1, precision=precision,
                               device=str(resolve_device(args.device)))  # fmt: skip
    else:
        from cmrvsr_fast.export.onnx_export import export_onnx

        onnx_path = out if args.format == "onnx" else out.with_suffix(".onnx")
        manifest = export_onnx(model, card, onnx_path, **shape, batch=args.batch)
        if args.format == "tensorrt":
            from cmrvsr_fast.export.tensorrt_build import build_engine, require_tensorrt

            try:
                require_tensorrt()
            except RuntimeError as error:
                raise UsageError(f"--format tensorrt: {error} (the ONNX graph is at {onnx_path})") from None
            manifest = build_engine(onnx_path, out, precision, max_batch=args.max_batch,
                                    timing_cache=args.timing_cache, version_compatible=args.version_compatible,
                                    hardware_compatible=args.hardware_compatible)  # fmt: skip
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, sha256 {manifest.artifact_sha256[:16]}…) and its "
          f"manifest; T×H×W {args.frames}×{args.height}×{args.width} LR, batch {manifest.batch or 'dynamic'}, "
          f"{precision}")  # fmt: skip
    return EXIT_OK


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, a batch scheduler) turned into the same orderly stop as Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def interrupted_code(stop: KeyboardInterrupt) -> int:
    return upscale.EXIT_SIGTERM if isinstance(stop, Terminated) else upscale.EXIT_CTRL_C


def interrupted_message(stop: KeyboardInterrupt) -> str:
    return f"stopped by {'SIGTERM' if isinstance(stop, Terminated) else 'Ctrl-C'}"


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (frames are counted from 0)")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmrvsr-fast", description="Phase-aware super-resolution of cardiac MRI cines"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    ev = commands.add_parser("eval", help="Table-1-style scores of bicubic and a model over a dataset")
    ev.add_argument(
        "--data", default="phantom", help="phantom[:N] or synth[:N] (held-out seeds), acdc:PATH, dsb:PATH, folder:PATH"
    )
    ev.add_argument("--scale", type=int, nargs="+", default=[4], choices=[2, 3, 4])
    source = ev.add_mutually_exclusive_group()
    source.add_argument("--weights", help="a .safetensors checkpoint (with its card beside it)")
    source.add_argument("--preset", help="an untrained preset (paper-x4, lite-x4, or 'paper' for every scale)")
    ev.add_argument("--ssim", default="paper", choices=["paper", "standard"], help="SSIM window (default: paper's)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--size", type=int, default=128, help="phantom image size (HR pixels)")
    ev.add_argument("--frames", type=int, default=30, help="phantom frames per cine")
    ev.add_argument("--limit", type=int, help="evaluate at most this many records")
    ev.add_argument("--json", type=Path, help="also write the table as JSON here")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(run=run_eval)

    tr = commands.add_parser("train", help="train a preset (docs/model.md recipe); torchrun for several processes")
    tr.add_argument("--preset", default="lite-x4", choices=zoo_names(),
                    help="a CMRVSR preset, a Table 2 ablation or a baseline of the benchmark zoo")  # fmt: skip
    tr.add_argument("--budget", help="STEPS[xBATCH]: a fixed step budget instead of --steps/--batch (no time limit)")
    tr.add_argument("--data", default="phantom", help="phantom[:N], synth[:N], acdc:PATH, dsb:PATH, folder:PATH")
    tr.add_argument("--out", required=True, help="run folder: checkpoints, logs")
    tr.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000)")
    tr.add_argument("--minutes", type=float, help="stop after this much wall time (whichever comes first)")
    tr.add_argument("--batch", type=int, default=16, help="clips per step and process (docs/model.md: 16)")
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--crop", type=int, default=32, help="LR crop size (docs/model.md: 32)")
    tr.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--validate-every", type=int, default=100)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    tr.add_argument("--size", type=int, default=128, help="phantom size (HR pixels)")
    tr.add_argument("--count", type=int, default=64, help="phantoms for training")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument(
        "--init-from", type=Path, help="start from the tensors of this checkpoint that fit (e.g. a ×4 model's trunk)"
    )
    tr.add_argument("--overwrite", action="store_true", help="start afresh over a run in --out")
    tr.set_defaults(run=run_train)

    de = commands.add_parser("demo", help="the main job on the embedded default weights, on a held-out phantom")
    de.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    de.add_argument("--device", default="auto")
    de.add_argument("--json", type=Path, help="also write the metrics as JSON here")
    de.add_argument("--weights", help="another .safetensors checkpoint instead of the embedded default")
    de.add_argument("--scale", type=int, choices=[2, 3, 4], help="the embedded default of this scale (default ×4)")
    de.add_argument("--size", type=int, default=144, help="HR size of the phantom (a multiple of 12)")
    de.add_argument("--frames", type=int, default=30)
    de.add_argument("--slices", type=int, default=3)
    de.set_defaults(run=run_demo)

    up = commands.add_parser(
        "upscale",
        help="super-resolve DICOM (folder or zip) or NIfTI cines into derived series",
        description="Exit codes: 0 every series written; 2 bad input or usage (nothing written); "
        "3 some series failed (reasons printed, the other series written).",
    )
    up.add_argument("input", help="a DICOM folder (searched recursively) or .zip, a NIfTI cine, or a folder of them")
    up.add_argument("output", help="output folder (never inside INPUT)")
    up.add_argument(
        "--scale", type=int, choices=[2, 3, 4],
        help="×2, ×3 or ×4: the embedded default of that scale, or a check of --weights' scale (default ×4 / theirs)",
    )  # fmt: skip
    up.add_argument("--weights", help="a .safetensors checkpoint or an exported .onnx/.engine/.pt2 (default: lite-x4)")
    up.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    up.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    up.add_argument("--backend", default="auto", choices=["auto", "torch", "triton", "cuda", "triton-step"],
                    help="Engine backend: auto (default) takes per op the fastest measured that runs here — on a "
                         "GPU with Triton the Triton ConvLSTM recurrence and cuDNN elsewhere, on a CPU PyTorch ops; "
                         "torch: PyTorch ops; triton / cuda: both fused kernels; triton-step: the Triton recurrence "
                         "with PyTorch ops elsewhere, failing where Triton cannot run")  # fmt: skip
    up.add_argument("--compile", action="store_true",
                    help="torch.compile the engine's per-step pieces for dynamic shapes (compiled once for the "
                         "job, seconds up front, repaid over many passes): for long jobs")  # fmt: skip
    up.add_argument("--cuda-graph", action="store_true",
                    help="replay each pass as a CUDA graph (CUDA only; captured once per pass shape, the four most "
                         "recent kept): fewer launches, for one cine at a time, where launches dominate")  # fmt: skip
    up.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time its convolution algorithms for each shape on first use (CUDA only; "
                         "seconds once per shape): for stacks and long jobs of one matrix size")  # fmt: skip
    up.add_argument("--format", choices=["dicom", "nifti"], help="output format (default: the input's)")
    up.add_argument("--ed", type=non_negative, help="ED frame, 0-based, for every series (default: Info.cfg or 0)")
    up.add_argument("--es", type=non_negative, help="ES frame, 0-based, for every series (default: Info.cfg or "
                    "estimated)")  # fmt: skip
    up.add_argument("--overwrite", action="store_true", help="replace series already in OUTPUT")
    up.add_argument("--resume", action="store_true",
                    help="keep the series OUTPUT already holds complete and made by the same weights and options; "
                         "do the rest")  # fmt: skip
    up.add_argument("--json", type=Path, metavar="REPORT",
                    help="also write the job's report here: every series with its status, reason, output, seconds "
                         "and QA figure; what was skipped; the exit code (no patient data)")  # fmt: skip
    up.add_argument("--dry-run", action="store_true", help="list what was found (no patient data) and stop")
    up.add_argument("--shard", help="I/N: process every N-th series starting at I (0-based), sharing OUTPUT")
    up.add_argument("--quiet", action="store_true", help="no progress bars")
    up.add_argument("--consistency", type=float, default=DEFAULT_STRENGTH, metavar="S",
                    help="0-1: how far each output is moved towards reproducing its input when degraded "
                         "again (1: exactly, by the least-squares change; 0: off; default %(default)s; "
                         "docs/quality.md)")  # fmt: skip
    up.set_defaults(run=run_upscale_command)

    ex = commands.add_parser("export", help="export the unrolled schedule to ONNX, a TensorRT engine or AOTInductor")
    ex.add_argument("--format", required=True, choices=["onnx", "tensorrt", "aoti"])
    ex.add_argument("--frames", type=positive, required=True, help="T, centre frames per cine (static)")
    ex.add_argument("--height", type=positive, required=True, help="LR height (static)")
    ex.add_argument("--width", type=positive, required=True, help="LR width (static)")
    ex.add_argument("--batch", type=positive, help="static batch (default: dynamic for ONNX/TensorRT, 1 for AOTI)")
    ex.add_argument("--weights", help="a .safetensors checkpoint (default: the embedded lite-x4)")
    ex.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="default fp32; fp16 for TensorRT")
    ex.add_argument("--out", required=True, help="model.onnx | model.engine | model.pt2")
    ex.add_argument("--device", default="cpu", help="AOTI target: cpu or cuda[:N]")
    ex.add_argument("--max-batch", type=positive, default=8, help="TensorRT profile maximum batch (dynamic batch)")
    ex.add_argument("--timing-cache", help="TensorRT timing cache file (read and updated)")
    ex.add_argument("--version-compatible", action="store_true", help="TensorRT version-compatible engine")
    ex.add_argument("--hardware-compatible", action="store_true", help="TensorRT Ampere+ hardware compatibility")
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(run=run_export)

    ph = commands.add_parser("phantom", help="write phantom cines (.npy + JSON sidecar + PNG picture)")
    ph.add_argument("out", help="output folder (created)")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--count", type=int, default=1)
    ph.add_argument("--size", type=int, default=256)
    ph.add_argument("--frames", type=int, default=30)
    ph.add_argument("--slices", type=int, default=1)
    ph.add_argument("--overwrite", action="store_true", help="replace existing files of the same names")
    ph.set_defaults(run=run_phantom)

    sv = commands.add_parser(
        "serve",
        help="a DICOM node: receive cines (C-STORE), super-resolve them, forward the derived series",
        description="Settings from --config (TOML) and the flags over it; docs/dicom-node.md. Stops in order on "
        "SIGTERM or Ctrl-C (the jobs in hand finished; anything unfinished resumes on the next start).",
    )
    sv.add_argument("--config", type=Path, help="a TOML file of settings (its [node] table)")
    sv.add_argument("--status", action="store_true", help="print the spool's queue, jobs by state and last error")
    sv.add_argument("--ae-title", help="this node's AE title (default CMRVSR)")
    sv.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    sv.add_argument("--port", type=int, help="DICOM port (default 11112)")
    sv.add_argument("--spool", type=Path, help="spool folder: received instances, results, journal")
    sv.add_argument("--forward", action="append", metavar="AE@HOST:PORT", help="a destination (repeatable)")
    sv.add_argument("--allow", action="append", metavar="AE", help="a calling AE title that may send (repeatable)")
    sv.add_argument("--allow-host", action="append", metavar="CIDR", dest="allow_hosts",
                    help="an address or network that may connect (repeatable)")  # fmt: skip
    sv.add_argument("--quiet-seconds", type=float, help="a series is complete after this long without an instance")
    sv.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    sv.add_argument("--weights", help="a checkpoint or exported artifact (default: the embedded default)")
    sv.add_argument("--scale", type=int, choices=[2, 3, 4], help="the embedded default of this scale (default ×4)")
    sv.add_argument("--metrics-port", type=int, help="serve /metrics and /health over HTTP on this port")
    sv.add_argument("--verbose", action="store_true", help="log each job's upscale details")
    sv.set_defaults(run=run_serve)
    return parser


SERVE_FLAGS = ("ae_title", "host", "port", "spool", "forward", "allow", "allow_hosts", "quiet_seconds", "device",
               "weights", "scale", "metrics_port")  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    try:
        from cmrvsr_fast.node.config import ConfigError, load_config
    except ImportError as error:
        raise UsageError(f"serve needs pynetdicom ({error}): pip install 'cmrvsr_fast[node]'") from None
    try:
        config = load_config(args.config, {name: getattr(args, name) for name in SERVE_FLAGS})
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if args.status:
        from cmrvsr_fast.node.journal import Journal
        from cmrvsr_fast.node.status import status_text

        journal_path = config.spool / "journal.sqlite"
        if not journal_path.is_file():
            raise UsageError(f"{config.spool}: no node journal here (journal.sqlite); nothing was received yet")
        print(status_text(Journal(journal_path), config.spool))
        return EXIT_OK
    from cmrvsr_fast.node.service import Node

    resolve_device(config.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("cmrvsr_fast").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        Node(config).serve_forever()
    except OSError as error:  # the port taken, the spool not writable: the node cannot start
        raise UsageError(f"cannot serve: {error.strerror or error}") from None
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Every command: one line on stderr and exit 2 for bad input; Ctrl-C and SIGTERM stop in order (staging
    removed by the commands' own cleanup), one line and exit 130 / 143."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return args.run(args)
    except (UsageError, DataError, FileNotFoundError, ValueError) as error:  # bad input, named in the message
        print(f"cmrvsr-fast {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        kept = "; finished series kept, the one in progress discarded" if args.command == "upscale" else ""
        print(f"cmrvsr-fast {args.command}: {interrupted_message(stop)}{kept}", file=sys.stderr)
        return interrupted_code(stop)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
