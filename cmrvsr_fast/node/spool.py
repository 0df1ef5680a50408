"""The node's spool: every received instance on disk (fsynced) before the sender is told it was stored.

Layout (names are hashes of UIDs, so no file or folder name carries a study's identity):
  journal.sqlite            the job journal (node/journal.py)
  tmp/                      files being written; renamed into place only when complete and synced
  incoming/<series>/<sop>.dcm   received instances, one folder per series
  results/<job>/            the derived series of a job (the upscale job's OUTPUT), made again on every try
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class OutOfSpace(OSError):
    """Less room than the node must keep free: the instance is refused, never acknowledged."""


class SpoolInUse(OSError):
    """Another node runs on this spool: two would resume and rebuild each other's jobs."""


def _key(uid: str, length: int) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:length]


def fsync_path(path: Path) -> None:
    """Make a file's contents, or a folder's entries (a rename, a new file: POSIX syncs the directory itself),
    durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.root / "journal.sqlite"
        self.tmp, self.incoming, self.results = self.root / "tmp", self.root / "incoming", self.root / "results"
        self._lock = open(self.root / "lock", "a")  # noqa: SIM115  (held for the node's life)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SpoolInUse(f"{self.root}: another cmrvsr-fast serve uses this spool (serve --status reads it "
                             "while it runs)") from None  # fmt: skip
        for folder in (self.tmp, self.incoming, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # writes cut short by a stop: never acknowledged, so resent
            leftover.unlink(missing_ok=True)

    def series_folder(self, series_uid: str) -> Path:
        return self.incoming / _key(series_uid, 16)

    def result_folder(self, job: int) -> Path:
        return self.results / f"job{job:06d}"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def store(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance durably: temporary file, fsync, rename into its series folder, fsync the folder.
        OutOfSpace when keeping it would leave less than the minimum free; OSError when the disk fails."""
        if self.free_bytes() - len(data) < self.min_free_bytes:
            raise OutOfSpace(f"{self.free_bytes() / 2**20:.0f} MiB free, {self.min_free_bytes / 2**20:.0f} MiB "
                             "must stay free")  # fmt: skip
        folder = self.series_folder(series_uid)
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            fsync_path(self.incoming)
        final = folder / f"{_key(sop_uid, 24)}.dcm"
        fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_path(folder)
        return final

    def fresh_result_folder(self, job: int) -> Path:
        """The job's results folder, emptied of an earlier try's (it is made again from the start)."""
        folder = self.result_folder(job)
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    def remove_files(self, files: list[str]) -> None:
        """Retention: these received instances (paths relative to the spool), and their series folder if that
        is left empty (an instance that arrived meanwhile keeps it)."""
        folders = set()
        for name in files:
            path = self.root / name
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()

    def remove_results(self, job: int) -> None:
        shutil.rmtree(self.result_folder(job), ignore_errors=True)

    def close(self) -> None:
        self._lock.close()
