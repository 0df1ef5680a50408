"""Training with the recipe of docs/model.md, on one process or under torchrun (DDP: gloo on CPU, NCCL on GPU).

Adam (lr 1e-4, no weight decay), batches of 7-frame clips with n true neighbouring warm-up frames on each side,
random 32×32 LR crops and flips, the deep-supervision L1 loss. Validation scores CardiacPSNR/SSIM of whole
held-out sequences against bicubic. Checkpoints: `best` (by validation CardiacPSNR) and `last`, each
.safetensors + card, plus `last_state.pt` (optimiser, step, RNG; read back with weights_only=True) for --resume.
Every validation is appended to `log.csv` and `log.json`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from cmrvsr_fast.atomic import atomic_write, atomic_write_text
from cmrvsr_fast.data.datasets import ClipDataset, Sequence
from cmrvsr_fast.evaluation.evaluate import bicubic_upscale, score_methods, super_resolve
from cmrvsr_fast.model.checkpoint import ModelCard, load_shared_weights, load_weights, read_card, save_checkpoint
from cmrvsr_fast.model.zoo import AnyConfig, build_model
from cmrvsr_fast.training.runs import optimiser_recipe

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """The recipe (defaults of docs/model.md) and the run's bookkeeping."""

    out: Path
    steps: int = 1000
    minutes: float | None = None  # wall-time budget; training stops at whichever of steps/minutes comes first
    batch: int = 16
    lr: float = 1e-4
    clip_frames: int = 7
    crop: int = 32
    flips: bool = True
    amp: bool = False  # bfloat16 autocast (CPU or GPU)
    seed: int = 0
    validate_every: int = 100
    device: str = "cpu"
    workers: int = 0
    resume: bool = False
    init_from: Path | None = None  # start from the tensors of this checkpoint that fit (not with resume)
    normalisation: tuple[float, float] = (54.089, 48.084)
    data_description: str = ""
    extra_card: dict = field(default_factory=dict)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def validate(model: torch.nn.Module, sequences: list[Sequence], options: TrainOptions) -> dict[str, float]:
    """CardiacPSNR/SSIM (paper SSIM) of the model and of bicubic, averaged over whole validation sequences."""
    scale = model.config.scale
    methods = {
        "model": lambda s: super_resolve(model, s.lr, s.phase, options.normalisation, options.device),
        "bicubic": lambda s: bicubic_upscale(s.lr, scale),
    }
    ours, base = score_methods(scale, sequences, methods, "paper")
    return {
        "psnr": ours.psnr,
        "ssim": ours.ssim,
        "cardiac_psnr": ours.cardiac_psnr,
        "cardiac_ssim": ours.cardiac_ssim,
        "bicubic_cardiac_psnr": base.cardiac_psnr,
        "bicubic_cardiac_ssim": base.cardiac_ssim,
    }


def train(
    config: AnyConfig, train_sequences: list[Sequence], valid_sequences: list[Sequence], options: TrainOptions
) -> dict:
    """Train a zoo model (CMRVSR(config), an ablation or a baseline) and return the summary written to log.json.
    Each model brings its own loss (`model.loss`: the deep-supervision L1 for CMRVSR)."""
    rank, world = _distributed()
    torch.manual_seed(options.seed)
    device = torch.device(options.device if world == 1 or options.device == "cpu" else f"cuda:{rank}")
    out = Path(options.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    model = build_model(config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=0.0)
    step, history, best, elapsed_before = 0, [], -math.inf, 0.0
    if options.resume:
        step, history, best, elapsed_before = _resume(model, optimiser, out, device)
        options.extra_card = {**_sittings(out, step), **options.extra_card}
    elif options.init_from is not None:
        copied = load_shared_weights(model, options.init_from)
        log.info("initialised %d tensors from %s", len(copied), options.init_from)
    engine = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model

    dataset = ClipDataset(
        train_sequences, config.scale, options.clip_frames, config.warmup, options.crop, options.flips,
        options.normalisation,
    )  # fmt: skip
    sampler = DistributedSampler(dataset, world, rank, seed=options.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(options.seed + step)
    loader = DataLoader(
        dataset, options.batch, shuffle=sampler is None, sampler=sampler, num_workers=options.workers,
        drop_last=True, generator=generator,
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} clips make no batch of {options.batch} (per process)")

    start = time.perf_counter()
    bar = tqdm(total=options.steps, initial=step, desc="train", disable=rank != 0, dynamic_ncols=True)
    running, epoch = [], step // len(loader)
    stop = step >= options.steps
    while not stop:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            model.train()
            lr, hr, phase = (batch[k].to(device) for k in ("lr", "hr", "phase"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.amp):
                outputs = engine(lr, phase, warmup_included=True)
            loss = model.loss(tuple(o.float() for o in outputs), hr)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            running.append(loss.item())
            elapsed = elapsed_before + time.perf_counter() - start
            out_of_time = options.minutes is not None and elapsed > 60 * options.minutes
            stop = step >= options.steps or _agree(out_of_time, world)
            if step % options.validate_every == 0 or stop:
                row = {"step": step, "epoch": epoch, "loss": float(np.mean(running)), "wall_s": round(elapsed, 1)}
                running = []
                if rank == 0:
                    row |= validate(model, valid_sequences, options)
                    history.append(row)
                    improved = row["cardiac_psnr"] > best
                    best = max(best, row["cardiac_psnr"])
                    card = _card(config, model.loss_description, options, row, step, elapsed, world)
                    save_checkpoint(model, out / "last.safetensors", card)
                    if improved:
                        save_checkpoint(model, out / "best.safetensors", card)
                    _save_state(out, optimiser, step, history, best, elapsed)
                    _write_logs(out, history)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", val_cPSNR=f"{row['cardiac_psnr']:.2f}")
            bar.update(1)
            if stop:
                break
        epoch += 1
    bar.close()
    summary = {"steps": step, "world_size": world, "history": history, "best_cardiac_psnr": best}
    if world > 1:
        hashes = [None] * world
        dist.all_gather_object(hashes, weights_sha256(model))
        summary |= {"rank_weights_sha256": hashes, "ddp_weights_identical": len(set(hashes)) == 1}
    if rank == 0:
        atomic_write_text(out / "log.json", json.dumps(summary, indent=2) + "\n")
    if world > 1:
        dist.barrier()  # nobody leaves before log.json is written
        dist.destroy_process_group()
    return summary


def _agree(flag: bool, world: int) -> bool:
    """Every rank stops together: the time budget is decided by the slowest clock."""
    if world == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _card(
    config: AnyConfig, loss: str, options: TrainOptions, row: dict, step: int, elapsed: float, world: int
) -> ModelCard:
    return ModelCard(
        config=config,
        normalisation=options.normalisation,
        training={
            "data": options.data_description,
            "recipe": {
                "optimiser": optimiser_recipe(options.lr),
                "batch": options.batch * world,
                "clip_frames": options.clip_frames,
                "warmup": config.warmup,
                "lr_crop": options.crop,
                "flips": options.flips,
                "amp_bf16": options.amp,
                "loss": loss,
                "seed": options.seed,
            },
            "iterations": step,
            **({"initialised_from": str(options.init_from)} if options.init_from else {}),
            "wall_time_s": round(elapsed, 1),
            "hardware": _hardware(options.device, world),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **options.extra_card,
        },
        metrics={"validation": row},
    )


def _hardware(device: str, world: int) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{world} × {name}, torch {torch.__version__}"


def _save_state(out: Path, optimiser, step: int, history: list, best: float, elapsed: float) -> None:
    state = {
        "optimiser": optimiser.state_dict(),
        "step": step,
        "best": best,
        "elapsed": elapsed,
        "history": json.dumps(history),
        "torch_rng": torch.get_rng_state(),
    }
    atomic_write(out / "last_state.pt", lambda tmp: torch.save(state, tmp))


def _resume(model, optimiser, out: Path, device) -> tuple[int, list, float, float]:
    weights, state_path = out / "last.safetensors", out / "last_state.pt"
    if not (weights.is_file() and state_path.is_file()):
        raise FileNotFoundError(f"--resume: {out} holds no last.safetensors and last_state.pt to resume from")
    saved = read_card(weights)
    if saved.config != model.config:
        raise ValueError(f"--resume: {weights} is {saved.config}, not {model.config}")
    load_weights(model, weights)
    state = torch.load(state_path, map_location=device, weights_only=True)
    optimiser.load_state_dict(state["optimiser"])
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resumed from step %d", state["step"])
    return int(state["step"]), json.loads(state["history"]), float(state["best"]), float(state["elapsed"])


def _sittings(out: Path, step: int) -> dict:
    """What a resumed run's cards keep from its earlier sittings: where it was initialised from, and the steps
    at which it was resumed (each sitting may have run on other hardware)."""
    before = read_card(out / "last.safetensors").training
    kept = {key: before[key] for key in ("initialised_from",) if key in before}
    return kept | {"resumed_at_steps": [*before.get("resumed_at_steps", []), step]}


def _write_logs(out: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

    atomic_write(out / "log.csv", write)
    atomic_write_text(out / "log.json", json.dumps({"history": history}, indent=2) + "\n")
