"""The node's job journal: one SQLite file in the spool that says, for every series received, where it stands.

States of a series (a job):
  receiving -> complete (no instance for `quiet_seconds`) -> processing -> forwarding -> sent
                                                                        \\-> failed (the reason kept)
  processing may also end in `skipped` (nothing to super-resolve: a localiser, a derived series).
Every instance is recorded (its SOP Instance UID is the key) after its file is on disk, so a resend of the
same instances never makes a second job; an instance new to a series that was already processed reopens it.
Retention forgets a finished job's instances with its files: the same study sent again after that is made again.
On start, a job left `processing` goes back to `complete`, one left `forwarding` is sent again (derived UIDs
are deterministic, so a PACS receiving an instance twice keeps one copy), one left `receiving` waits a fresh
quiet time.
Written with synchronous=FULL: a row the journal returned from is on disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATES = ("receiving", "complete", "processing", "forwarding", "sent", "skipped", "failed")
UNFINISHED = ("receiving", "complete", "processing", "forwarding")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,                 -- upscale | pass-through
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    next_try REAL NOT NULL DEFAULT 0,
    finished REAL,
    cleaned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs(id),
    file TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    job INTEGER NOT NULL REFERENCES jobs(id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, destination)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    job INTEGER,
    text TEXT NOT NULL,
    error INTEGER NOT NULL DEFAULT 1
);
"""


JOB_COLUMNS = "id, series_uid, kind, state, reason, attempts, instances, last_received"  # Job's fields, in order


@dataclass
class Job:
    id: int
    series_uid: str
    kind: str
    state: str
    reason: str
    attempts: int
    instances: int
    last_received: float

    @property
    def name(self) -> str:
        """How logs and the status name a job: its number, never a patient's or a study's identifiers."""
        return f"job {self.id}"


class Journal:
    """Thread-safe: the receiving threads, the workers and the forwarder share one connection under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also after a failed COMMIT (disk full): never left open
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # receiving

    def known_instance(self, sop_uid: str) -> bool:
        return bool(self._query("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)))

    def record_instance(self, series_uid: str, sop_uid: str, file: str, kind: str) -> bool:
        """Record a received instance whose file is on disk; False when it was known already (a resend)."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone():
                return False
            row = db.execute("SELECT id, state FROM jobs WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None:
                job = db.execute(
                    "INSERT INTO jobs (series_uid, kind, state, first_received, last_received) "
                    "VALUES (?, ?, 'receiving', ?, ?)",
                    (series_uid, kind, now, now),
                ).lastrowid
            else:
                job, state = row
                # A new instance of a series already completed: it is made again with everything it now holds.
                db.execute(
                    "UPDATE jobs SET state = 'receiving', last_received = ?, reason = CASE WHEN ? = 'receiving' "
                    "THEN reason ELSE '' END, attempts = CASE WHEN ? = 'receiving' THEN attempts ELSE 0 END, "
                    "cleaned = 0, finished = NULL WHERE id = ?",
                    (now, state, state, job),
                )
                if state not in ("receiving", "complete"):
                    db.execute("DELETE FROM deliveries WHERE job = ?", (job,))
                    self._event(db, job, f"reopened: a new instance arrived after it was {state}", error=False)
            db.execute("INSERT INTO instances (sop_uid, job, file) VALUES (?, ?, ?)", (sop_uid, job, file))
            db.execute("UPDATE jobs SET instances = instances + 1 WHERE id = ?", (job,))
        return True

    def complete_quiet(self, quiet_seconds: float) -> list[Job]:
        """Mark `complete` every receiving series that has been quiet for `quiet_seconds`."""
        limit = time.time() - quiet_seconds
        with self._transaction() as db:
            rows = db.execute("SELECT id FROM jobs WHERE state = 'receiving' AND last_received <= ?", (limit,))
            ids = [row[0] for row in rows]
            for job in ids:
                db.execute("UPDATE jobs SET state = 'complete', next_try = 0 WHERE id = ?", (job,))
        return [self.job(i) for i in ids]

    # processing

    def claim(self) -> Job | None:
        """The oldest complete job that is due, now marked `processing` (one claimant wins)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'complete' AND next_try <= ? ORDER BY last_received LIMIT 1",
                (time.time(),),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'processing', attempts = attempts + 1 WHERE id = ?", (row[0],))
            return self._job(db, row[0])  # read in the transaction: the snapshot the worker compares against

    def files(self, job: int) -> list[str]:
        return [r[0] for r in self._query("SELECT file FROM instances WHERE job = ? ORDER BY file", (job,))]

    def processed(self, job: int, destinations: list[str], instances_at_claim: int) -> bool:
        """Processing done: forwarding to every destination (or sent, with none). False, and nothing changed, when
        the job was reopened by a new instance meanwhile (it is made again)."""
        with self._transaction() as db:
            state, count = db.execute("SELECT state, instances FROM jobs WHERE id = ?", (job,)).fetchone()
            if state != "processing" or count != instances_at_claim:
                return False
            for destination in destinations:
                db.execute("INSERT OR REPLACE INTO deliveries (job, destination) VALUES (?, ?)", (job, destination))
            if destinations:
                db.execute("UPDATE jobs SET state = 'forwarding', reason = '' WHERE id = ?", (job,))
            else:
                db.execute("UPDATE jobs SET state = 'sent', finished = ? WHERE id = ?", (time.time(), job))
        return True

    def finish(self, job: int, state: str, reason: str, instances_at_claim: int | None = None) -> None:
        """`skipped` or `failed` with the reason (unless reopened meanwhile)."""
        with self._transaction() as db:
            current, count = db.execute("SELECT state, instances FROM jobs WHERE id = ?", (job,)).fetchone()
            if instances_at_claim is not None and (current != "processing" or count != instances_at_claim):
                return  # reopened by a new instance while it was processed: it is made again
            db.execute("UPDATE jobs SET state = ?, reason = ?, finished = ? WHERE id = ?",
                       (state, reason, time.time(), job))  # fmt: skip
            self._event(db, job, f"{state}: {reason}", error=state == "failed")

    def retry_later(self, job: int, reason: str, delay: float, count_try: bool = True) -> None:
        """Back to `complete`, due after `delay`; count_try False: the try is not counted (the system was short of
        room, not the job wrong)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'complete', reason = ?, next_try = ?, attempts = attempts - ? WHERE id = ? "
                "AND state = 'processing'",
                (reason, time.time() + delay, 0 if count_try else 1, job),
            ).rowcount
            if changed:
                self._event(db, job, f"retry in {delay:.0f} s: {reason}")

    def reprocess(self, job: int, reason: str) -> None:
        """A forwarding job whose results are gone: made again from its instances."""
        with self._transaction() as db:
            changed = db.execute("UPDATE jobs SET state = 'complete', next_try = 0, reason = ? WHERE id = ? AND "
                                 "state = 'forwarding'", (reason, job)).rowcount  # fmt: skip
            if changed:
                db.execute("DELETE FROM deliveries WHERE job = ?", (job,))
                self._event(db, job, f"made again: {reason}")

    # forwarding

    def due_deliveries(self) -> list[tuple[int, str, int]]:
        """(job, destination, attempts) of every pending delivery that is due, oldest job first."""
        return self._query(
            "SELECT d.job, d.destination, d.attempts FROM deliveries d JOIN jobs j ON j.id = d.job WHERE "
            "j.state = 'forwarding' AND d.state = 'pending' AND d.next_try <= ? ORDER BY d.job",
            (time.time(),),
        )

    def delivery_done(self, job: int, destination: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = 'sent', attempts = attempts + 1, last_error = '' WHERE job = ? "
                       "AND destination = ?", (job, destination))  # fmt: skip
            self._settle(db, job)

    def delivery_failed(self, job: int, destination: str, error: str, delay: float | None) -> None:
        """A try that failed: tried again after `delay` seconds, or given up (None: the destination refused)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_try = ?, state = ? "
                "WHERE job = ? AND destination = ?",
                (error, time.time() + (delay or 0), "pending" if delay is not None else "failed", job, destination),
            )
            self._event(db, job, f"to {destination}: {error}")
            self._settle(db, job)

    def _settle(self, db: sqlite3.Connection, job: int) -> None:
        states = [r[0] for r in db.execute("SELECT state FROM deliveries WHERE job = ?", (job,))]
        if "pending" in states:
            return
        if "failed" in states:
            failed = db.execute("SELECT destination, last_error FROM deliveries WHERE job = ? AND state = 'failed'",
                                (job,))  # fmt: skip
            errors = "; ".join(f"{destination}: {error}" for destination, error in failed)
            db.execute("UPDATE jobs SET state = 'failed', reason = ?, finished = ? WHERE id = ?",
                       (f"not delivered: {errors}", time.time(), job))  # fmt: skip
        else:
            db.execute("UPDATE jobs SET state = 'sent', finished = ? WHERE id = ? AND state = 'forwarding'",
                       (time.time(), job))  # fmt: skip

    # start, retention, status

    def resume_unfinished(self, max_attempts: int | None = None) -> dict[str, int]:
        """After a stop (clean or not): processing -> complete (made again), forwarding stays and is resent, and a
        series that was being received gets a fresh quiet time, so that a sender resending after the stop is
        not cut short by a completion measured from before it. A job the node was processing when it stopped for
        the `max_attempts`-th time is failed instead: a series that kills the process would otherwise be taken up
        first on every restart, and nothing else would ever be processed."""
        with self._transaction() as db:
            counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs WHERE state IN ('receiving', 'complete', "
                                     "'processing', 'forwarding') GROUP BY state").fetchall())  # fmt: skip
            if max_attempts is not None:
                reason = f"the node stopped while processing it, {max_attempts} times"
                for (job,) in db.execute("SELECT id FROM jobs WHERE state = 'processing' AND attempts >= ?",
                                         (max_attempts,)).fetchall():  # fmt: skip
                    db.execute("UPDATE jobs SET state = 'failed', reason = ?, finished = ? WHERE id = ?",
                               (reason, time.time(), job))  # fmt: skip
                    self._event(db, job, f"failed: {reason}")
            db.execute("UPDATE jobs SET state = 'complete', next_try = 0 WHERE state = 'processing'")
            db.execute("UPDATE jobs SET last_received = ? WHERE state = 'receiving'", (time.time(),))
            db.execute("UPDATE deliveries SET next_try = 0 WHERE state = 'pending'")
        return counts

    def expired(self, retention_seconds: float) -> list[int]:
        """Jobs finished (sent or skipped) more than `retention_seconds` ago whose files are still kept."""
        limit = time.time() - retention_seconds
        rows = self._query("SELECT id FROM jobs WHERE state IN ('sent', 'skipped') AND cleaned = 0 AND finished <= ?",
                           (limit,))  # fmt: skip
        return [row[0] for row in rows]

    def clean(self, job: int, remove: Callable[[list[str]], None]) -> bool:
        """Retention of one finished job, atomic against the receiver: if the job is still sent or skipped, call
        remove(its instance files) and forget its instances, so that the same study sent again later (a PACS
        that lost it) is kept and made again instead of being taken for a resend. An instance that reopens the
        job meanwhile waits for the journal, and its own file is not among those removed."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job,)).fetchone()
            if row is None or row[0] not in ("sent", "skipped"):
                return False
            remove([r[0] for r in db.execute("SELECT file FROM instances WHERE job = ?", (job,))])
            db.execute("DELETE FROM instances WHERE job = ?", (job,))
            db.execute("UPDATE jobs SET cleaned = 1, instances = 0 WHERE id = ?", (job,))
        return True

    @staticmethod
    def _job(db: sqlite3.Connection, job: int) -> Job:
        return Job(*db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job,)).fetchone())

    def job(self, job: int) -> Job:
        return Job(*self._query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job,))[0])

    def jobs(self) -> list[Job]:
        return [Job(*row) for row in self._query(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")]

    def counts(self) -> dict[str, int]:
        found = dict(self._query("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state: int(found.get(state, 0)) for state in STATES}

    def last_error(self) -> tuple[float, int | None, str] | None:
        rows = self._query("SELECT at, job, text FROM events WHERE error = 1 ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None

    def note(self, job: int | None, text: str, error: bool = True) -> None:
        with self._transaction() as db:
            self._event(db, job, text, error)

    @staticmethod
    def _event(db: sqlite3.Connection, job: int | None, text: str, error: bool = True) -> None:
        db.execute("INSERT INTO events (at, job, text, error) VALUES (?, ?, ?, ?)", (time.time(), job, text, error))
