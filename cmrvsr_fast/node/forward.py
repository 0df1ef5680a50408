"""The node's sending side: a C-STORE SCU that delivers a job's files to one destination in one association.

A destination that cannot be reached, aborts, or answers "out of resources" (0xA7xx) is a transient failure: the
delivery is tried again later, for ever, with a growing wait. Any other failure status (the destination refuses
the data) is tried `max_attempts` times, then the job is marked failed with the status in its reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import pydicom
from pynetdicom import AE, evt

from cmrvsr_fast.node.config import Destination
from cmrvsr_fast.node.scp import no_delay

log = logging.getLogger("cmrvsr_fast.node")

MAX_CONTEXTS = 128  # presentation contexts one association may propose
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}  # stored, with a warning (coercion, elements discarded)


class DeliveryError(Exception):
    def __init__(self, text: str, transient: bool) -> None:
        super().__init__(text)
        self.transient = transient


def _no_delay(event) -> None:
    no_delay(event.assoc.dul.socket.socket)


def file_contexts(files: list[Path]) -> dict[str, set[str]]:
    """SOP class -> the transfer syntaxes the files are stored in (read from their file meta only)."""
    contexts: dict[str, set[str]] = defaultdict(set)
    for path in files:
        meta = pydicom.filereader.read_file_meta_info(path)
        contexts[str(meta.MediaStorageSOPClassUID)].add(str(meta.TransferSyntaxUID))
    return contexts


def send_files(destination: Destination, files: list[Path], calling_ae: str, timeout: float) -> int:
    """Store every file at `destination` in one association; the count sent, or DeliveryError."""
    if not files:
        return 0
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = file_contexts(files)
    if len(contexts) > MAX_CONTEXTS:
        raise DeliveryError(f"{len(contexts)} SOP classes in one job, more than one association can carry", False)
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])  # fmt: skip
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "cannot be reached or aborted"
        raise DeliveryError(f"{destination} {why}", transient=not assoc.is_rejected)
    try:
        for count, path in enumerate(files):
            status = assoc.send_c_store(path)
            code = int(status.Status) if "Status" in status else None
            if code is None:
                raise DeliveryError(f"{destination}: connection lost after {count} of {len(files)} files", True)
            if code != 0 and code not in WARNING_STATUSES:
                transient = 0xA700 <= code <= 0xA7FF
                raise DeliveryError(f"{destination} answered status 0x{code:04X} after {count} of {len(files)} "
                                    "files", transient)  # fmt: skip
    finally:
        if assoc.is_established:
            assoc.release()
    return len(files)
