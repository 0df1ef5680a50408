"""One job of the node: the received series run through the `upscale` job (the same reading, refusals, QA and
DICOM writing as `cmrvsr-fast upscale`), its derived series left in the job's results folder, synced to disk.

Outcomes: "forward" (derived series made), "skipped" (nothing to super-resolve: a localiser, a derived series,
another SOP class), "failed" (the data was refused: the reason kept; trying again would not help) and, for an
error of the node or the system (an exception), a retry while attempts remain.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cmrvsr_fast.inference.upscaler import Upscaler
from cmrvsr_fast.jobs.upscale import InputRefused, JobReport, NoCineFound, Options, run_dicom
from cmrvsr_fast.node.spool import fsync_path

log = logging.getLogger("cmrvsr_fast.node")


@dataclass
class Outcome:
    state: str  # forward | skipped | failed | wait (no room for the results: tried again later, no try counted)
    reason: str = ""


def result_files(folder: Path) -> list[Path]:
    """The DICOM files of a job's derived series, in a stable order (staging leftovers excluded)."""
    if not folder.is_dir():
        return []
    found = folder.rglob("*.dcm")
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, and its parent's entry for it: results are on disk before the
    journal says so."""
    for path in [*sorted(folder.rglob("*"), key=lambda p: -len(p.parts)), folder, folder.parent]:
        fsync_path(path)


def upscale_series(source: Path, results: Path, upscaler: Upscaler) -> Outcome:
    """Upscale every cine of the series folder `source` into `results` (created)."""
    report = JobReport()
    options = Options(output_format="dicom", progress=False)
    try:
        run_dicom(source, results, upscaler, options, log.debug, report)
    except NoCineFound as refusal:  # no cine among what arrived
        return Outcome("skipped", _without_paths(str(refusal), source))
    except InputRefused as refusal:  # the results folder cannot be written or lacks room: the system, not the data
        return Outcome("wait", _without_paths(str(refusal), source).replace(str(results), "the results folder"))
    failed = [f"{r.label}: {r.detail}" for r in report.results if r.status == "failed"]
    problems = failed + report.problems
    if problems:
        return Outcome("failed", _without_paths("; ".join(problems), source))
    written = [r for r in report.results if r.status == "written"]
    if not written:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items()))
        return Outcome("skipped", f"no cine to super-resolve ({skipped or 'nothing usable'})")
    for result in written:
        if result.worse_than_bicubic:
            log.warning("%s: the output, degraded again, reproduces the input worse than bicubic (%.1f vs %.1f dB)",
                        result.label, result.qa["super_resolved_db"], result.qa["bicubic_db"])  # fmt: skip
    sync_tree(results)
    return Outcome("forward")


def _without_paths(text: str, source: Path) -> str:
    """Reasons name spool files relative to the series folder (hashed names), not by the node's paths."""
    for path in (str(source.resolve()), str(source)):
        text = text.replace(path + os.sep, "").replace(path, "the received series")
    return text
