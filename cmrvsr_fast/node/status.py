"""What the node reports about itself: `cmrvsr-fast serve --status` (read from the journal, also while the node
runs or after it stopped) and the optional HTTP endpoint (/metrics in Prometheus text format, /health).
Jobs are named by number; no patient, study or series identifier is shown."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cmrvsr_fast.node.journal import STATES, UNFINISHED, Journal


@dataclass
class Counters:
    """Since the node started (the journal holds the lasting record)."""

    received_instances: int = 0
    refused_instances: int = 0
    processed: int = 0
    processing_seconds: float = 0.0
    forwarded_instances: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, name: str, amount: float = 1) -> None:
        """Add to a counter: the receiving threads and the workers count at once."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


def status_text(journal: Journal, spool_root: Path, recent: int = 10) -> str:
    counts = journal.counts()
    queue = sum(counts[state] for state in UNFINISHED)
    lines = [f"spool {spool_root}: {shutil.disk_usage(spool_root).free / 2**30:.1f} GiB free",
             f"queue depth {queue} (" + ", ".join(f"{counts[s]} {s}" for s in UNFINISHED) + ")",
             "finished: " + ", ".join(f"{counts[s]} {s}" for s in STATES if s not in UNFINISHED)]  # fmt: skip
    error = journal.last_error()
    if error is not None:
        at, job, text = error
        where = f"job {job}: " if job is not None else ""
        lines.append(f"last error {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}: {where}{text}")
    jobs = journal.jobs()[-recent:]
    if jobs:
        lines.append(f"{'job':>6} {'state':<11} {'instances':>9} {'tries':>5}  reason")
        lines += [f"{j.id:>6} {j.state:<11} {j.instances:>9} {j.attempts:>5}  {j.reason}" for j in jobs]
    return "\n".join(lines)


def prometheus_text(journal: Journal, spool_root: Path, counters: Counters | None = None) -> str:
    counts = journal.counts()
    out = ["# HELP cmrvsr_node_jobs Jobs (received series) by state.", "# TYPE cmrvsr_node_jobs gauge"]
    out += [f'cmrvsr_node_jobs{{state="{state}"}} {counts[state]}' for state in STATES]
    gauges = {
        "queue_depth": ("Jobs not yet sent, skipped or failed.", sum(counts[s] for s in UNFINISHED)),
        "spool_free_bytes": ("Free space on the spool's disk.", shutil.disk_usage(spool_root).free),
    }
    error = journal.last_error()
    gauges["last_error_timestamp_seconds"] = ("When the last error was noted (0: none).", error[0] if error else 0)
    totals = {}
    if counters is not None:
        totals = {
            "received_instances_total": ("Instances stored since start.", counters.received_instances),
            "refused_instances_total": (
                "Instances answered with a failure status since start.",
                counters.refused_instances,
            ),
            "processed_jobs_total": ("Jobs upscaled since start.", counters.processed),
            "processing_seconds_total": ("Time spent upscaling since start.", round(counters.processing_seconds, 3)),
            "forwarded_instances_total": ("Instances delivered since start.", counters.forwarded_instances),
        }
    for kind, table in (("gauge", gauges), ("counter", totals)):
        for name, (text, value) in table.items():
            out += [f"# HELP cmrvsr_node_{name} {text}", f"# TYPE cmrvsr_node_{name} {kind}",
                    f"cmrvsr_node_{name} {value}"]  # fmt: skip
    return "\n".join(out) + "\n"


def start_metrics_server(node) -> ThreadingHTTPServer:
    """GET /metrics and /health on (metrics_host, metrics_port), in a background thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = prometheus_text(node.journal, node.spool.root, node.counters).encode()
                kind, code = "text/plain; version=0.0.4", 200
            elif self.path == "/health":
                alive = not node.stopping.is_set() and all(t.is_alive() for t in node.threads)
                body, kind, code = (b"ok\n" if alive else b"stopping\n"), "text/plain", 200 if alive else 503
            else:
                body, kind, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every few seconds would flood the log
            pass

    server = ThreadingHTTPServer((node.config.metrics_host, node.config.metrics_port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
