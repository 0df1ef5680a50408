"""The DICOM node's figures on this machine: ingest rate and end-to-end time of a study, measured through the
real parts on loopback (dcmtk's storescu as the scanner, `cmrvsr-fast serve` as a process, Orthanc as the PACS).

    python benchmarks/node_throughput.py --slices 10 --frames 25 --size 64

Run twice: with Orthanc answering without Nagle's delay (TCP_NODELAY=1, dcmtk's switch) and as it comes, since
the PACS's own per-instance delay dominates forwarding. Ingest: storescu sends every instance of the study
(TCP_NODELAY=1, as a scanner would) and exits when the last is acknowledged, i.e. on disk (fsynced) and in the
journal; instances per second over that time. End to end: from the first instance sent to Orthanc holding every
derived instance, with the quiet time (a setting) and the processing time (from the node's log) beside it; the
rest is forwarding and the polling waits. Writes dated JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_result

# The tests' loopback surroundings (Orthanc, the node as a process) and their synthetic DICOM cine, reused so
# that the figures come from exactly what the tests run.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_fixtures import write_cine_series
from node_helpers import NodeProcess, Orthanc, storescu, wait_for


def measure(slices: int, frames: int, size: int, quiet: float, folder: Path, pacs_no_delay: bool) -> dict:
    files = write_cine_series(folder / "study", slices=slices, frames=frames, size=size, seed=5)
    pacs = Orthanc(folder / "orthanc", no_delay=pacs_no_delay)
    pacs.start()
    node = NodeProcess(folder / "node", [pacs.destination], quiet_seconds=quiet)
    try:
        started = time.perf_counter()
        node.start()
        startup = time.perf_counter() - started
        sent = time.perf_counter()
        answer = storescu(node.port, files)
        ingest = time.perf_counter() - sent
        if answer.returncode != 0:
            raise RuntimeError(f"storescu failed: {answer.stdout}{answer.stderr}")
        expected = slices * frames
        wait_for(lambda: pacs.instance_count() >= expected, 3600, "the derived series in Orthanc", interval=0.05)
        end_to_end = time.perf_counter() - sent
        log = node.log()
    finally:
        node.stop_if_running()
        pacs.stop()
    processing = _logged_seconds(log, "processed in ")
    return {
        "study": {
            "slices": slices,
            "frames": frames,
            "lr_size": size,
            "instances": len(files),
            "mib": round(sum(p.stat().st_size for p in files) / 2**20, 2),
        },
        "node_start_seconds": round(startup, 2),
        "ingest_seconds": round(ingest, 3),
        "ingest_instances_per_second": round(len(files) / ingest, 1),
        "quiet_seconds": quiet,
        "processing_seconds": processing,
        "end_to_end_seconds": round(end_to_end, 2),
        "forwarding_and_waits_seconds": round(end_to_end - ingest - quiet - (processing or 0), 2),
        "pacs_tcp_nodelay": pacs_no_delay,
    }


def _logged_seconds(log: str, marker: str) -> float | None:
    for line in log.splitlines():
        if marker in line:
            return float(line.split(marker)[1].split(" s")[0])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--size", type=int, default=64, help="LR rows and columns of each image")
    parser.add_argument("--quiet-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/node_throughput_<date>)")
    args = parser.parse_args()
    missing = [tool for tool in ("Orthanc", "storescu") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"node_throughput: {', '.join(missing)} not installed (apt-get install orthanc dcmtk)")
    runs = []
    for pacs_no_delay in (True, False):  # Orthanc as a PACS tuned for many small PDUs, and as it comes
        with tempfile.TemporaryDirectory() as folder:
            runs.append(measure(args.slices, args.frames, args.size, args.quiet_seconds, Path(folder), pacs_no_delay))
    result = {"runs": runs}
    result["hardware"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "orthanc": subprocess.run(["Orthanc", "--version"], capture_output=True, text=True)
                          .stdout.splitlines()[0]}  # fmt: skip
    result["command"] = " ".join(["python", *sys.argv])
    print(result)
    write_result("node_throughput", "cpu", result, args.out)


if __name__ == "__main__":
    main()
