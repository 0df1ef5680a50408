"""The node's receiving side: a pynetdicom Storage SCP (C-ECHO, C-STORE) that keeps every instance it
acknowledges.

What is offered at association: Verification, MR Image Storage and Enhanced MR Image Storage in the uncompressed
transfer syntaxes (the ones the reader decodes without extra codecs; a sender converts, or negotiation refuses
the context), and with other_sop_classes = "pass-through" every other storage SOP class in any transfer syntax,
kept and forwarded unchanged. Calling AE titles and peer addresses outside the allow-lists are refused before any
data moves (A-ASSOCIATE-RJ, or the connection closed).

C-STORE statuses: 0x0000 once the instance is on disk and in the journal (also for a resend of one already kept);
0xA700 "out of resources" when the spool's disk is short of room or a write fails (nothing kept); 0xA900 when the
data set is not the SOP class it was sent as, or an image lacks pixel bytes its header declares; 0xC000 when the
data set cannot be decoded or has no Series/SOP Instance UID.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import sqlite3
import ssl
import threading

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import EnhancedMRImageStorage, MRImageStorage, Verification
from pynetdicom.transport import ThreadedAssociationServer

from cmrvsr_fast.node.config import NodeConfig
from cmrvsr_fast.node.journal import Journal
from cmrvsr_fast.node.spool import Spool
from cmrvsr_fast.node.status import Counters

log = logging.getLogger("cmrvsr_fast.node")

MR_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
SUCCESS, OUT_OF_RESOURCES, NOT_MATCHING_SOP_CLASS, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
TLS_HANDSHAKE_SECONDS = 10.0


def configure_pynetdicom_logging() -> None:
    """pynetdicom logs request identifiers (patient name and ID of queries) unless told not to."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def pixel_bytes_problem(ds: Dataset, transfer_syntax) -> str:
    """Why an uncompressed image's PixelData cannot be what its header declares ('' when it can)."""
    if "PixelData" not in ds:
        return "no PixelData"
    if transfer_syntax not in UNCOMPRESSED:
        return ""  # encapsulated: the decoder finds a cut itself
    needed = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
              * math.ceil(int(ds.BitsAllocated) / 8) * int(ds.get("NumberOfFrames", 1) or 1))  # fmt: skip
    held = len(ds.PixelData)
    return f"PixelData holds {held} of the {needed} bytes its header declares" if held < needed else ""


class Receiver:
    """The C-STORE and C-ECHO handlers over the spool and the journal."""

    def __init__(self, config: NodeConfig, spool: Spool, journal: Journal, counters: Counters) -> None:
        self.config, self.spool, self.journal, self.counters = config, spool, journal, counters

    def handlers(self) -> list:
        return [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo),
                (evt.EVT_REJECTED, self.on_rejected)]  # fmt: skip

    def on_echo(self, event) -> int:
        return SUCCESS

    def on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        log.warning("association from %s@%s refused (calling AE title not allowed)", requestor.ae_title,
                    requestor.address)  # fmt: skip

    def on_store(self, event) -> int:
        peer = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            sop_class = str(ds.SOPClassUID)
            problem = ""
            if sop_class != event.context.abstract_syntax:
                problem = f"its SOPClassUID {sop_class} is not the class it was sent as"
            elif sop_class in MR_CLASSES:
                problem = pixel_bytes_problem(ds, event.context.transfer_syntax)
        except Exception as error:  # noqa: BLE001  (a malformed data set raises any of pydicom's errors)
            self.counters.count("refused_instances")
            log.warning("instance from %s refused: cannot be decoded (%s)", peer, type(error).__name__)
            return CANNOT_UNDERSTAND
        if problem:
            self.counters.count("refused_instances")
            log.warning("instance from %s refused: %s", peer, problem)
            return NOT_MATCHING_SOP_CLASS
        if self.journal.known_instance(sop_uid):
            return SUCCESS  # a resend of an instance already kept
        kind = "upscale" if sop_class in MR_CLASSES else "pass-through"
        try:
            path = self.spool.store(series_uid, sop_uid, event.encoded_dataset())
            self.journal.record_instance(series_uid, sop_uid, str(path.relative_to(self.spool.root)), kind)
        except (OSError, sqlite3.Error) as error:  # disk full or failing, for the file or the journal
            self.counters.count("refused_instances")
            log.error("instance from %s not kept: %s", peer, getattr(error, "strerror", None) or error)
            return OUT_OF_RESOURCES
        self.counters.count("received_instances")
        return SUCCESS


class AllowListServer(ThreadedAssociationServer):
    """An association server that closes connections from addresses outside the allow-list before reading a
    byte (the AE-title check happens later, at association, in pynetdicom)."""

    allowed_networks: tuple = ()  # set by start_server

    def get_request(self):
        client_socket, address = self.socket.accept()
        if not self.allowed(address[0]):  # before any TLS handshake: a stranger gets no time on this thread
            client_socket.close()
            raise OSError(f"connection from {address[0]} refused (address not allowed)")
        no_delay(client_socket)
        if self.ssl_context:
            # the handshake runs on the accepting thread: a peer that stalls in it holds that thread this long
            client_socket.settimeout(min(self.ae.network_timeout or TLS_HANDSHAKE_SECONDS, TLS_HANDSHAKE_SECONDS))
            client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True)
        return client_socket, address

    def allowed(self, host: str) -> bool:
        if not self.allowed_networks:
            return True
        address = ipaddress.ip_address(host.split("%")[0])
        if address.version == 6 and address.ipv4_mapped is not None:  # an IPv4 peer of a dual-stack socket
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return True
        log.warning("connection from %s refused (address not allowed)", host)
        return False


def no_delay(sock: socket.socket) -> None:
    """Send small PDUs at once: with Nagle's algorithm each C-STORE response waits for the peer's delayed ACK
    (docs/dicom-node.md has what that cost)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    if config.tls_ca is not None:
        context.load_verify_locations(str(config.tls_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def build_ae(config: NodeConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.network_timeout = config.network_timeout
    ae.acse_timeout = ae.dimse_timeout = config.network_timeout
    ae.maximum_associations = 16
    ae.add_supported_context(Verification)
    for sop_class in MR_CLASSES:
        ae.add_supported_context(sop_class, UNCOMPRESSED)
    if config.other_sop_classes == "pass-through":
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax not in MR_CLASSES:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.require_calling_aet = list(config.allow)
    return ae


def start_server(ae: AE, config: NodeConfig, receiver: Receiver) -> AllowListServer:
    """Listen on (host, port) in a background thread; the returned server's shutdown() stops it."""
    server = ae.make_server((config.host, config.port), ae_title=config.ae_title, evt_handlers=receiver.handlers(),
                            ssl_context=tls_context(config), server_class=AllowListServer)  # fmt: skip
    server.allowed_networks = tuple(ipaddress.ip_network(n, strict=False) for n in config.allow_hosts)
    thread = threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True)
    thread.start()
    ae._servers.append(server)  # as AE.start_server does: the server's shutdown() removes itself from there
    return server
