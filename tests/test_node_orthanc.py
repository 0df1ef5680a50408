"""The DICOM node end to end with its real surroundings on loopback: dcmtk's storescu/echoscu as the scanner,
`cmrvsr-fast serve` as a process, Debian's Orthanc as the PACS the derived series go to. A study sent is a study
answered once: also when the node is killed (-9) while receiving, processing or sending, and when the PACS is
down for a while."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import SECRET_STRINGS, write_cine_series
from node_helpers import NodeProcess, Orthanc, echoscu, require_tools, storescu, wait_for

pytestmark = pytest.mark.slow

SLICES, FRAMES, SIZE = 2, 10, 36  # a small cine: the node's behaviour, not the model's speed, is tested here


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_tools("Orthanc", "storescu", "echoscu")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pacs(orthanc):
    if orthanc.process is None:  # a test that stopped it failed before starting it again
        orthanc.start()
    orthanc.clear()
    return orthanc


def cine(folder: Path, number: int, slices: int = SLICES, frames: int = FRAMES, size: int = SIZE) -> list[Path]:
    uid = f"1.2.826.0.1.3680043.8.498.{number}.{slices}.{frames}.{size}"
    return write_cine_series(folder / f"cine{number}", slices=slices, frames=frames, size=size, seed=number,
                             series_number=number, series_uid=uid, study_uid=f"{uid}.1")  # fmt: skip


def localiser(folder: Path) -> list[Path]:
    """Three single images at three positions: not a cine, so no derived series."""
    return write_cine_series(folder / "localiser", slices=3, frames=1, size=SIZE, seed=77, series_number=1,
                             series_uid="1.2.826.0.1.3680043.8.498.77.1", with_trigger=False)  # fmt: skip


def assert_sent(node: NodeProcess, pacs: Orthanc, expected_series: list[int], timeout: float = 90) -> None:
    """Every job finished, and the PACS holds exactly the derived series expected (their instance counts)."""
    wait_for(lambda: node.states() and all(s in ("sent", "skipped", "failed") for s in node.states()), timeout,
             f"every job to finish (states now {node.states()})")  # fmt: skip
    assert "failed" not in node.states(), node.log()[-3000:]
    held = pacs.series()
    assert sorted(s["instances"] for s in held) == sorted(expected_series), held
    assert all("DERIVED" in s["image_type"] for s in held), held


def assert_no_identifiers(node: NodeProcess) -> None:
    text = node.log()
    leaked = [secret for secret in SECRET_STRINGS if secret in text]
    assert not leaked, f"patient identifiers in the node's log: {leaked}"


def test_a_cine_and_a_localiser_give_one_derived_series(tmp_path, pacs):
    node = NodeProcess(tmp_path, [pacs.destination]).start()
    try:
        assert echoscu(node.port).returncode == 0
        sent = storescu(node.port, cine(tmp_path, 11) + localiser(tmp_path))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert_sent(node, pacs, [SLICES * FRAMES])
        assert sorted(node.states()) == ["sent", "skipped"]
        [(reason,)] = node.journal("SELECT reason FROM jobs WHERE state = 'skipped'")
        assert "no MR cine series" in reason and str(node.spool) not in reason  # no node paths in reasons
        status = subprocess.run([*node.serve_command(), "--status"], capture_output=True, text=True, timeout=120)
        assert "queue depth 0" in status.stdout and "1 sent, 1 skipped" in status.stdout, status.stdout
        assert node.terminate() == 0  # SIGTERM: a clean stop
        assert "stopped" in node.log()
        assert_no_identifiers(node)
    finally:
        node.stop_if_running()


def test_refused_ae_title_and_malformed_instance_while_serving(tmp_path, pacs):
    node = NodeProcess(tmp_path, [pacs.destination], allow=["SCANNER"]).start()
    try:
        refused = echoscu(node.port, calling="INTRUDER")
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout
        good = cine(tmp_path, 12)
        broken = tmp_path / "broken.dcm"
        dataset = pydicom.dcmread(good[0])
        dataset.Rows = 2 * dataset.Rows  # the header declares twice the pixels PixelData holds
        dataset.save_as(broken)
        answer = storescu(node.port, [broken])
        assert answer.returncode != 0  # dcmtk: a failure status is a failed store
        assert "refused: PixelData holds" in node.log()
        assert node.instances() == 0  # nothing kept of it
        assert echoscu(node.port).returncode == 0  # still serving
        assert storescu(node.port, good).returncode == 0
        assert_sent(node, pacs, [SLICES * FRAMES])
        assert_no_identifiers(node)
    finally:
        node.stop_if_running()


def test_four_senders_at_once(tmp_path, pacs):
    node = NodeProcess(tmp_path, [pacs.destination]).start()
    try:
        senders = [storescu(node.port, cine(tmp_path, 20 + i, slices=1), calling=f"SCANNER{i}", wait=False)
                   for i in range(4)]  # fmt: skip
        for sender in senders:
            output, _ = sender.communicate(timeout=120)
            assert sender.returncode == 0, output
        assert_sent(node, pacs, [FRAMES] * 4)
    finally:
        node.stop_if_running()


@pytest.mark.parametrize("moment", ["receiving", "processing", "sending"])
def test_kill_9_then_restart_loses_nothing_and_sends_once(tmp_path, pacs, moment):
    frames = FRAMES if moment == "receiving" else 25  # a longer cine: more time to be killed in
    files = cine(tmp_path, 30, frames=frames, size=48)
    node = NodeProcess(tmp_path, [pacs.destination]).start()
    try:
        if moment == "receiving":
            sender = storescu(node.port, files, fast=False, wait=False)  # ~40 ms an instance: time to kill in
            wait_for(lambda: node.instances() >= 5, 60, "the first instances to arrive")
        elif moment == "processing":
            assert storescu(node.port, files).returncode == 0
            wait_for(lambda: node.states() == ["processing"], 60, "processing to start")
        else:
            assert storescu(node.port, files).returncode == 0
            wait_for(lambda: node.states() == ["forwarding"] and pacs.instance_count() > 0, 60, "forwarding")
        node.kill()
        expected_state = {"receiving": "receiving", "processing": "processing", "sending": "forwarding"}[moment]
        assert node.states() == [expected_state]  # killed in that state, not after it
        if moment == "receiving":
            sender.communicate(timeout=60)
            assert node.instances() < len(files)
        node.start()
        if moment == "receiving":  # the scanner sends the study again
            assert storescu(node.port, files).returncode == 0
        assert_sent(node, pacs, [SLICES * frames])
        assert node.journal("SELECT COUNT(*) FROM jobs") == [(1,)]
        assert node.instances() == len(files)
    finally:
        node.stop_if_running()


def test_pacs_down_while_forwarding_delays_and_delivers(tmp_path, pacs):
    node = NodeProcess(tmp_path, [pacs.destination]).start()
    try:
        pacs.stop()
        assert storescu(node.port, cine(tmp_path, 40)).returncode == 0
        wait_for(lambda: node.journal("SELECT attempts FROM deliveries WHERE attempts >= 2"), 60,
                 "two failed tries to reach the PACS")  # fmt: skip
        assert node.states() == ["forwarding"]
        time.sleep(0.5)
        pacs.start()
        assert_sent(node, pacs, [SLICES * FRAMES])
    finally:
        if pacs.process is None:
            pacs.start()
        node.stop_if_running()
