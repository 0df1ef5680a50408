"""The DICOM node's real surroundings for the tests, all on loopback: Debian's Orthanc as the PACS, dcmtk's
storescu/echoscu as the scanner, and `cmrvsr-fast serve` as a process that can be killed.

Where Orthanc or dcmtk are missing the tests that need them skip with the reason, except under CI (CI=true) or
with CMRVSR_REQUIRE_NODE_TOOLS=1, where a missing tool fails them: .ci/run installs both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"Orthanc": "orthanc", "storescu": "dcmtk", "echoscu": "dcmtk"}


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    why = f"{', '.join(missing)} not installed (apt-get install {' '.join(sorted({TOOLS[n] for n in missing}))})"
    if os.environ.get("CI") == "true" or os.environ.get("CMRVSR_REQUIRE_NODE_TOOLS"):
        pytest.fail(f"{why}: required here")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Orthanc:
    """An Orthanc with its own storage, DICOM and HTTP ports on loopback; stop() and start() keep its data."""

    def __init__(self, folder: Path, no_delay: bool = False) -> None:
        self.folder, self.no_delay = folder, no_delay  # no_delay: answer without Nagle's delay (dcmtk's switch)
        self.dicom_port, self.http_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {"Name": "cmrvsr-test", "StorageDirectory": str(folder / "storage"),
                  "IndexDirectory": str(folder / "index"), "DicomAet": "ORTHANC", "DicomPort": self.dicom_port,
                  "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
                  "Plugins": [], "SaveJobs": False}  # fmt: skip
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.process: subprocess.Popen | None = None

    @property
    def destination(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"

    def start(self) -> None:
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115  (kept open for the process's life)
        env = {**os.environ, **({"TCP_NODELAY": "1"} if self.no_delay else {})}
        self.process = subprocess.Popen(["Orthanc", str(self.folder / "orthanc.json")], stdout=log, stderr=log, env=env)
        wait_for(self._answers, 30, "Orthanc's HTTP port")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def _answers(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.load(response)

    def clear(self) -> None:
        for patient in self.get("/patients"):
            request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/patients/{patient}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()

    def series(self) -> list[dict]:
        """Every series held: its instance count, UID and the ImageType of its first instance."""
        found = []
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            first = self.get(f"/instances/{series['Instances'][0]}/simplified-tags")
            found.append({"instances": len(series["Instances"]), "image_type": first.get("ImageType", ""),
                          "uid": series["MainDicomTags"]["SeriesInstanceUID"]})  # fmt: skip
        return found

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])


class NodeProcess:
    """`python -m cmrvsr_fast serve --config FILE` with its log in a file; kill() is kill -9."""

    def __init__(self, folder: Path, forward: list[str], quiet_seconds: float = 1.0, **settings) -> None:
        self.folder = folder
        self.port = free_port()
        self.spool = folder / "spool"
        self.log_path = folder / "node.log"
        destinations = ", ".join(f'"{d}"' for d in forward)
        lines = ["[node]", 'ae_title = "CMRVSR"', 'host = "127.0.0.1"', f"port = {self.port}",
                 f'spool = "{self.spool}"', f"quiet_seconds = {quiet_seconds}", "retry_seconds = 0.5",
                 "retry_max_seconds = 1", 'device = "cpu"', f"forward = [{destinations}]"]  # fmt: skip
        lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        self.config = folder / "node.toml"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def serve_command(self) -> list[str]:
        return [sys.executable, "-m", "cmrvsr_fast", "serve", "--config", str(self.config)]

    def start(self) -> NodeProcess:
        before = len(self.log())  # a restart appends to the same log
        log = open(self.log_path, "ab")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(self.serve_command(), stdout=log, stderr=log, cwd=ROOT, env=env)
        wait_for(lambda: self._check_alive() and "listening as" in self.log()[before:], 120, "the node to listen")
        return self

    def _check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the node exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def terminate(self) -> int:
        self.process.terminate()
        return self.process.wait(60)

    def journal(self, sql: str) -> list[tuple]:
        """A read of the node's journal from outside (WAL: never blocks the node)."""
        path = self.spool / "journal.sqlite"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the schema not created yet
            return []
        finally:
            db.close()

    def states(self) -> list[str]:
        return [r[0] for r in self.journal("SELECT state FROM jobs ORDER BY id")]

    def instances(self) -> int:
        rows = self.journal("SELECT COUNT(*) FROM instances")
        return rows[0][0] if rows else 0


def storescu(port: int, files: list[Path], calling: str = "SCANNER", fast: bool = True, wait: bool = True):
    """dcmtk's storescu to the node; fast: without Nagle's delay (TCP_NODELAY=1), as a scanner would send."""
    env = {**os.environ, **({"TCP_NODELAY": "1"} if fast else {})}
    command = ["storescu", "-aet", calling, "-aec", "CMRVSR", "127.0.0.1", str(port), *map(str, files)]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def echoscu(port: int, calling: str = "SCANNER") -> subprocess.CompletedProcess:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", "CMRVSR", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
