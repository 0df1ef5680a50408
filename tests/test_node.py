"""The DICOM node's parts in one process: settings, the journal's states, the spool, and the Storage SCP answered
by pynetdicom clients (allow-lists, TLS, statuses, other SOP classes, metrics), with no model loaded. The whole
node with Orthanc and dcmtk: tests/test_node_orthanc.py."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import SECRET_STRINGS, write_cine_series
from node_helpers import free_port, wait_for
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from cmrvsr_fast.node.config import ConfigError, Destination, load_config
from cmrvsr_fast.node.journal import Journal
from cmrvsr_fast.node.service import Node
from cmrvsr_fast.node.spool import OutOfSpace, Spool

EXPLICIT = "1.2.840.10008.1.2.1"


# settings


def test_toml_then_flags(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nae_title = "SR1"\nport = 104\nforward = ["PACS@10.1.2.3:104", "B@[::1]:11112"]\n'
                    'quiet_seconds = 5\nallow_hosts = ["10.0.0.0/8"]\n')  # fmt: skip
    config = load_config(path, {"port": 4242, "allow": ["SCANNER"], "device": None})
    assert (config.ae_title, config.port, config.quiet_seconds, config.allow) == ("SR1", 4242, 5.0, ["SCANNER"])
    assert config.forward == [Destination("PACS", "10.1.2.3", 104), Destination("B", "::1", 11112)]
    assert str(config.forward[1]) == "B@[::1]:11112"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ae_titel = "X"', "unknown setting 'ae_titel'"),
        ('forward = ["PACS:104"]', "expected AE@HOST:PORT"),
        ('ae_title = "A\\\\B"', "no backslash"),
        ('allow_hosts = ["ten.0.0.0"]', "not an IP address"),
        ('tls_cert = "c.pem"', "tls_cert and tls_key go together"),
        ("port = 70000", "outside 0-65535"),
        ('port = "x"', "expected a number"),
        ('other_sop_classes = "keep"', "expected one of"),
        ("quiet_seconds = -1", "may not be negative"),
        ("port = ", "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, message):
    path = tmp_path / "node.toml"
    path.write_text(f"[node]\n{text}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(path, {})


def test_serve_refuses_a_bad_setting_in_one_line(tmp_path):
    from cmrvsr_fast.cli import main

    assert main(["serve", "--forward", "PACS", "--spool", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


# the journal


def test_journal_states_dedupe_and_reopen(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.record_instance("1.2.3", "1.2.3.1", "a", "upscale")
    assert not journal.record_instance("1.2.3", "1.2.3.1", "a", "upscale")  # a resend: no second instance
    assert journal.record_instance("1.2.3", "1.2.3.2", "b", "upscale")
    assert journal.complete_quiet(3600) == []  # not quiet long enough
    [job] = journal.complete_quiet(0)
    assert (job.state, job.instances) == ("complete", 2)
    claimed = journal.claim()
    assert (claimed.state, claimed.attempts) == ("processing", 1) and journal.claim() is None
    assert journal.processed(job.id, ["PACS@h:1", "B@h:2"], instances_at_claim=2)
    assert journal.counts()["forwarding"] == 1
    journal.delivery_done(job.id, "PACS@h:1")
    journal.delivery_failed(job.id, "B@h:2", "down", delay=0)
    assert journal.job(job.id).state == "forwarding"
    journal.delivery_done(job.id, "B@h:2")
    assert journal.job(job.id).state == "sent"
    # an instance new to a finished series reopens it, with one job still
    assert journal.record_instance("1.2.3", "1.2.3.3", "c", "upscale")
    assert [(j.id, j.state, j.instances) for j in journal.jobs()] == [(job.id, "receiving", 3)]


def test_journal_resume_after_a_stop(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    for series in ("1", "2", "3"):
        journal.record_instance(series, series + ".1", series, "upscale")
    journal.complete_quiet(0)
    first, second = journal.claim(), journal.claim()
    journal.processed(second.id, ["P@h:1"], 1)
    journal.record_instance("4", "4.1", "4", "upscale")
    journal.close()
    journal = Journal(tmp_path / "j.sqlite")  # as after kill -9
    before = time.time()
    assert journal.resume_unfinished() == {"processing": 1, "forwarding": 1, "complete": 1, "receiving": 1}
    assert journal.job(first.id).state == "complete"  # made again
    assert journal.job(second.id).state == "forwarding" and journal.due_deliveries()  # sent again
    assert journal.job(4).last_received >= before  # a fresh quiet time


def test_processing_failure_is_retried_then_failed(tmp_path):
    config = load_config(None, {"spool": tmp_path / "spool", "max_attempts": 2, "retry_seconds": 0})
    node = Node(config, make_upscaler=lambda: None)
    files = write_cine_series(tmp_path / "cine", slices=1, frames=8, size=24)
    for path in files:
        ds = pydicom.dcmread(path)
        stored = node.spool.store(ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())
        node.journal.record_instance(ds.SeriesInstanceUID, ds.SOPInstanceUID, str(stored), "upscale")
    node.journal.complete_quiet(0)
    node.upscaler = object()  # no model: every try raises
    node.process(node.journal.claim())
    assert node.journal.counts()["complete"] == 1  # to be tried again
    node.process(node.journal.claim())
    job = node.journal.jobs()[0]
    assert (job.state, job.attempts) == ("failed", 2) and "AttributeError" in job.reason


def test_retention_removes_what_was_sent(tmp_path):
    spool = Spool(tmp_path / "spool")
    journal = Journal(spool.journal_path)
    stored = spool.store("9.9", "9.9.1", b"x" * 10).relative_to(spool.root)
    journal.record_instance("9.9", "9.9.1", str(stored), "upscale")
    journal.complete_quiet(0)
    job = journal.claim()
    spool.result_folder(job.id).mkdir()
    journal.processed(job.id, [], 1)  # no destination: sent
    assert journal.expired(3600) == [] and journal.expired(0) == [job.id]
    assert journal.clean(job.id, spool.remove_files)
    spool.remove_results(job.id)
    assert not spool.series_folder("9.9").exists() and not spool.result_folder(job.id).exists()
    assert journal.expired(0) == [] and journal.job(job.id).state == "sent"
    # the same study sent again after its files are gone is kept and made again, not taken for a resend
    assert journal.record_instance("9.9", "9.9.1", str(stored), "upscale")
    assert not journal.clean(job.id, spool.remove_files)  # reopened: retention leaves it alone
    assert journal.job(job.id).state == "receiving" and journal.job(job.id).instances == 1


def test_a_job_reopened_while_processed_is_not_finished_by_its_old_run(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_instance("5", "5.1", "a", "upscale")
    journal.complete_quiet(0)
    job = journal.claim()
    journal.record_instance("5", "5.2", "b", "upscale")  # arrives while the worker runs
    journal.finish(job.id, "skipped", "no cine", instances_at_claim=job.instances)
    assert not journal.processed(job.id, ["P@h:1"], job.instances)
    assert (journal.job(job.id).state, journal.job(job.id).instances) == ("receiving", 2)


def test_spool_refuses_when_the_disk_is_short(tmp_path):
    spool = Spool(tmp_path / "spool", min_free_bytes=2**62)
    with pytest.raises(OutOfSpace):
        spool.store("1", "1.1", b"data")
    assert not any(spool.incoming.iterdir()) and not any(spool.tmp.iterdir())


# the SCP, in process


@pytest.fixture
def node_factory(tmp_path):
    nodes = []

    def start(**settings) -> Node:
        settings = {"host": "127.0.0.1", "port": 0, "spool": tmp_path / f"spool{len(nodes)}",
                    "quiet_seconds": 3600, **settings}  # fmt: skip
        node = Node(load_config(None, settings), make_upscaler=lambda: None)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(timeout=10)


def scu(title: str = "SCANNER", *contexts) -> AE:
    ae = AE(ae_title=title)
    ae.add_requested_context(Verification)
    for context in contexts or (MRImageStorage,):
        ae.add_requested_context(context, EXPLICIT)
    return ae


def cine_file(tmp_path: Path) -> Path:
    return write_cine_series(tmp_path / "one", slices=1, frames=2, size=24)[0]


def test_statuses_and_logs_without_identifiers(tmp_path, node_factory, caplog):
    caplog.set_level(logging.DEBUG)
    node = node_factory(allow=["SCANNER"])
    assoc = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    good = pydicom.dcmread(cine_file(tmp_path))
    assert assoc.send_c_store(good).Status == 0x0000
    assert assoc.send_c_store(good).Status == 0x0000  # a resend: success, kept once
    short = pydicom.dcmread(cine_file(tmp_path))
    short.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    short.Columns = 2 * short.Columns
    assert assoc.send_c_store(short).Status == 0xA900  # PixelData shorter than declared
    anonymous = pydicom.dcmread(cine_file(tmp_path))
    del anonymous.SeriesInstanceUID
    anonymous.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.8"
    assert assoc.send_c_store(anonymous).Status == 0xC000
    assoc.release()
    assert node.journal.counts()["receiving"] == 1 and node.journal.jobs()[0].instances == 1
    refused = scu("INTRUDER").associate("127.0.0.1", node.port, ae_title="CMRVSR")
    assert refused.is_rejected
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert not [secret for secret in SECRET_STRINGS if secret in text]


def test_out_of_resources_keeps_nothing(tmp_path, node_factory):
    node = node_factory(min_free_mb=2**40)
    assoc = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR")
    assert assoc.send_c_store(pydicom.dcmread(cine_file(tmp_path))).Status == 0xA700
    assoc.release()
    assert node.journal.jobs() == [] and not any(node.spool.incoming.iterdir())


def test_address_allow_list_closes_other_peers(node_factory):
    node = node_factory(allow_hosts=["10.0.0.0/8"])
    assoc = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR")
    assert not assoc.is_established
    open_node = node_factory(allow_hosts=["127.0.0.0/8"])
    assoc = scu().associate("127.0.0.1", open_node.port, ae_title="CMRVSR")
    assert assoc.is_established
    assoc.release()


def test_other_sop_classes_refused_or_passed_through(tmp_path, node_factory):
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    refusing = node_factory()
    assoc = scu("SCANNER", MRImageStorage, CTImageStorage).associate("127.0.0.1", refusing.port, ae_title="CMRVSR")
    assert CTImageStorage not in [c.abstract_syntax for c in assoc.accepted_contexts]
    assoc.release()

    received = []
    pacs = AE("PACS")
    pacs.add_supported_context(CTImageStorage, [EXPLICIT, "1.2.840.10008.1.2"])
    server = pacs.start_server(("127.0.0.1", 0), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset) or 0)])  # fmt: skip
    try:
        node = node_factory(other_sop_classes="pass-through", quiet_seconds=0.2,
                            forward=[f"PACS@127.0.0.1:{server.server_address[1]}"])  # fmt: skip
        assoc = scu("SCANNER", CTImageStorage).associate("127.0.0.1", node.port, ae_title="CMRVSR")
        assert assoc.send_c_store(ct).Status == 0
        assoc.release()
        wait_for(lambda: node.journal.counts()["sent"] == 1, 30, "the CT to be passed on")
        assert [ds.SOPInstanceUID for ds in received] == [ct.SOPInstanceUID]
        assert received[0].PixelData == ct.PixelData  # unchanged
        assert node.journal.jobs()[0].kind == "pass-through"
    finally:
        server.shutdown()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: no certificate to test TLS with")
    cert, key = folder / "node.pem", folder / "node.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return cert, key


def test_tls(tmp_path, node_factory):
    cert, key = make_certificate(tmp_path)
    node = node_factory(tls_cert=str(cert), tls_key=str(key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR", tls_args=(client, "127.0.0.1"))
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
    plain = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR")
    assert not plain.is_established


def test_metrics_and_health(tmp_path):
    port = free_port()
    node = Node(load_config(None, {"host": "127.0.0.1", "port": 0, "spool": tmp_path / "spool",
                                   "metrics_port": port}), make_upscaler=lambda: None)  # fmt: skip
    node.start()
    try:
        assoc = scu().associate("127.0.0.1", node.port, ae_title="CMRVSR")
        assoc.send_c_store(pydicom.dcmread(cine_file(tmp_path)))
        assoc.release()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'cmrvsr_node_jobs{state="receiving"} 1' in text
        assert "cmrvsr_node_received_instances_total 1" in text and "cmrvsr_node_queue_depth 1" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.read() == b"ok\n"
    finally:
        node.stop(timeout=10)


def test_a_second_node_on_one_spool_is_refused(tmp_path):
    from cmrvsr_fast.node.spool import SpoolInUse

    first = Spool(tmp_path / "spool")
    with pytest.raises(SpoolInUse, match="another cmrvsr-fast serve"):
        Spool(tmp_path / "spool")
    first.close()
    Spool(tmp_path / "spool").close()


def test_a_series_that_keeps_killing_the_node_is_failed_on_restart(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.record_instance("6", "6.1", "a", "upscale")
    for _ in range(3):  # claimed, then the process dies, three times
        journal.complete_quiet(0)
        assert journal.claim() is not None
        journal.resume_unfinished(max_attempts=3)
    job = journal.jobs()[0]
    assert job.state == "failed" and "stopped while processing it, 3 times" in job.reason


def test_no_room_for_results_waits_without_using_a_try(tmp_path, monkeypatch):
    from cmrvsr_fast.jobs import upscale

    config = load_config(None, {"spool": tmp_path / "spool", "max_attempts": 1})
    node = Node(config, make_upscaler=lambda: None)
    for path in write_cine_series(tmp_path / "cine", slices=1, frames=8, size=24):
        ds = pydicom.dcmread(path)
        stored = node.spool.store(ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes())
        node.journal.record_instance(ds.SeriesInstanceUID, ds.SOPInstanceUID, str(stored), "upscale")
    node.journal.complete_quiet(0)
    from cmrvsr_fast import load

    node.upscaler = load(device="cpu")
    monkeypatch.setattr(upscale, "output_bytes", lambda *args: 2**62)  # the results would not fit
    node.process(node.journal.claim())
    job = node.journal.jobs()[0]
    assert (job.state, job.attempts) == ("complete", 0) and "the results need about" in job.reason
    assert str(node.spool.root) not in job.reason
