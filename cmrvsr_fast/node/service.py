"""`cmrvsr-fast serve`: the DICOM node's threads around one spool, one journal and one model.

  receiving   pynetdicom's association threads (node/scp.py): each instance on disk and in the journal first
  housekeeping  marks quiet series complete; deletes what was sent `retention_hours` ago
  workers     `workers` threads: claim a complete job, upscale it (node/process.py), hand it to forwarding
  forwarder   one thread: delivers due jobs to each destination (node/forward.py), retries with backoff
  metrics     optional HTTP /metrics (Prometheus text) and /health (node/status.py)

Stopping (SIGTERM, Ctrl-C): no new associations; each worker finishes the job it holds (or, if the process is
killed meanwhile, the job is made again on the next start); the forwarder stops after the delivery it is in.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from cmrvsr_fast.node.config import Destination, NodeConfig
from cmrvsr_fast.node.forward import DeliveryError, send_files
from cmrvsr_fast.node.journal import Job, Journal
from cmrvsr_fast.node.process import Outcome, result_files, upscale_series
from cmrvsr_fast.node.scp import Receiver, build_ae, configure_pynetdicom_logging, start_server
from cmrvsr_fast.node.spool import Spool
from cmrvsr_fast.node.status import Counters, start_metrics_server

log = logging.getLogger("cmrvsr_fast.node")

POLL_SECONDS = 0.2


class Node:
    def __init__(self, config: NodeConfig, make_upscaler: Callable | None = None) -> None:
        self.config = config
        self.spool = Spool(config.spool, config.min_free_mb * 2**20)
        self.journal = Journal(self.spool.journal_path)
        self.counters = Counters()
        self.make_upscaler = make_upscaler or self._default_upscaler
        self.upscaler = None
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = None
        self.metrics = None

    def _default_upscaler(self):
        from cmrvsr_fast.inference.upscaler import load

        config = self.config
        return load(config.weights, device=config.device, precision=config.precision,
                    scale=None if config.weights else config.scale)  # fmt: skip

    def start(self) -> None:
        configure_pynetdicom_logging()
        resumed = self.journal.resume_unfinished(self.config.max_attempts)
        if resumed:
            log.info("resuming unfinished jobs: %s", ", ".join(f"{n} {state}" for state, n in sorted(resumed.items())))
        self.upscaler = self.make_upscaler()  # loaded once, before the first association is accepted
        receiver = Receiver(self.config, self.spool, self.journal, self.counters)
        self.server = start_server(build_ae(self.config), self.config, receiver)
        loops = [("housekeeping", self._housekeeping), ("forwarder", self._forwarder)]
        loops += [(f"worker-{i}", self._worker) for i in range(self.config.workers)]
        for name, loop in loops:
            thread = threading.Thread(target=self._guarded, args=(name, loop), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        if self.config.metrics_port is not None:
            self.metrics = start_metrics_server(self)
        host, port = self.server.server_address[:2]
        where = ", ".join(map(str, self.config.forward)) or "nowhere (results stay in the spool)"
        log.info("listening as %s on %s:%s%s; forwarding to %s", self.config.ae_title, host, port,
                 " with TLS" if self.config.tls else "", where)  # fmt: skip

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def serve_forever(self) -> None:
        """Start, then run until SIGTERM or Ctrl-C; stop in order."""
        previous = {sig: signal.signal(sig, lambda *_: self.stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self.stopping.wait(1.0):
                pass
            log.info("stopping: no new associations; finishing the jobs in hand")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for thread in self.threads:
            thread.join(timeout)
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics.server_close()
        self.journal.close()
        self.spool.close()
        log.info("stopped")

    def _guarded(self, name: str, loop: Callable[[], None]) -> None:
        """A loop that survives its own errors: logged and noted, tried again after a pause."""
        while not self.stopping.is_set():
            try:
                loop()
            except Exception as error:
                log.exception("%s: unexpected error", name)
                self.journal.note(None, f"{name}: {type(error).__name__}: {error}")
                self.stopping.wait(self.config.retry_seconds)

    # housekeeping

    def _housekeeping(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            for job in self.journal.complete_quiet(self.config.quiet_seconds):
                log.info("%s: complete (%d instances)", job.name, job.instances)
            for job_id in self.journal.expired(self.config.retention_hours * 3600):
                if self.journal.clean(job_id, self.spool.remove_files):
                    self.spool.remove_results(job_id)
                    log.info("job %d: files removed (retention)", job_id)

    # processing

    def _worker(self) -> None:
        while not self.stopping.is_set():
            job = self.journal.claim()
            if job is None:
                self.stopping.wait(POLL_SECONDS)
                continue
            self.process(job)

    def process(self, job: Job) -> None:
        log.info("%s: processing (%d instances, try %d)", job.name, job.instances, job.attempts)
        start = time.perf_counter()
        try:
            if job.kind == "pass-through":
                outcome = Outcome("forward")
            else:
                results = self.spool.fresh_result_folder(job.id)
                outcome = upscale_series(self.spool.series_folder(job.series_uid), results, self.upscaler)
        except Exception as error:  # noqa: BLE001  (an error of the node or the system: tried again)
            reason = f"{type(error).__name__}: {error}"
            if job.attempts < self.config.max_attempts:
                delay = self.config.retry_seconds * 2 ** (job.attempts - 1)
                log.warning("%s: try %d failed (%s); again in %.0f s", job.name, job.attempts, reason, delay)
                self.journal.retry_later(job.id, reason, delay)
            else:
                log.error("%s: failed after %d tries: %s", job.name, job.attempts, reason)
                self.journal.finish(job.id, "failed", reason, job.instances)
            return
        seconds = time.perf_counter() - start
        if outcome.state == "wait":  # no room for the results: the system's trouble, not the series'
            delay = self.config.retry_max_seconds
            log.warning("%s: %s; again in %.0f s", job.name, outcome.reason, delay)
            self.journal.retry_later(job.id, outcome.reason, delay, count_try=False)
            self.spool.fresh_result_folder(job.id)
            return
        if outcome.state == "forward":
            destinations = [str(d) for d in self.config.forward]
            if self.journal.processed(job.id, destinations, job.instances):
                log.info("%s: processed in %.1f s; %s", job.name, seconds,
                         "forwarding" if destinations else "no destination: results kept in the spool")  # fmt: skip
                self.counters.count("processing_seconds", seconds)
                self.counters.count("processed")
            else:
                log.info("%s: reopened while processing (new instances): made again", job.name)
        else:
            log.log(logging.WARNING if outcome.state == "failed" else logging.INFO, "%s: %s: %s", job.name,
                    outcome.state, outcome.reason)  # fmt: skip
            self.journal.finish(job.id, outcome.state, outcome.reason, job.instances)

    # forwarding

    def job_files(self, job: Job):
        if job.kind == "pass-through":
            return [self.spool.root / f for f in self.journal.files(job.id)]
        return result_files(self.spool.result_folder(job.id))

    def _forwarder(self) -> None:
        destinations = {str(d): d for d in self.config.forward}
        while not self.stopping.wait(POLL_SECONDS):
            for job_id, name, attempts in self.journal.due_deliveries():
                if self.stopping.is_set():
                    return
                # a destination dropped from the config since the job was processed is still served
                destination = destinations.get(name) or Destination.parse(name)
                self.deliver(self.journal.job(job_id), destination, attempts)

    def deliver(self, job: Job, destination, attempts: int) -> None:
        try:
            files = self.job_files(job)
            if not files and job.kind == "upscale":  # results lost (a power cut before they were synced): made again
                self.journal.reprocess(job.id, "its results were missing when it was to be sent")
                log.warning("%s: results missing; made again", job.name)
                return
            sent = send_files(destination, files, self.config.ae_title, self.config.network_timeout)
        except OSError as error:  # a result file gone (the job reopened and being made again) or unreadable
            failure = DeliveryError(f"{type(error).__name__}: {error.strerror or error}", transient=True)
        except DeliveryError as error:
            failure = error
        except Exception as error:  # noqa: BLE001  (a bad file, a library's error: counted, never a stuck loop)
            failure = DeliveryError(f"{type(error).__name__}: {error}", transient=False)
        else:
            self.journal.delivery_done(job.id, str(destination))
            self.counters.count("forwarded_instances", sent)
            log.info("%s: %d instances sent to %s", job.name, sent, destination)
            return
        if failure.transient or attempts + 1 < self.config.max_attempts:
            delay = min(self.config.retry_seconds * 2 ** min(attempts, 30), self.config.retry_max_seconds)
            log.warning("%s: to %s: %s; again in %.0f s", job.name, destination, failure, delay)
            self.journal.delivery_failed(job.id, str(destination), str(failure), delay)
        else:
            log.error("%s: to %s: %s; given up", job.name, destination, failure)
            self.journal.delivery_failed(job.id, str(destination), str(failure), None)
