"""The DICOM listener: a C-STORE SCP (pynetdicom) that hands every instance to the inbox service.

Every storage SOP class is accepted at association time with every transfer syntax pydicom can read, so a
sender learns why an instance is refused from the C-STORE status itself (SOP class not supported, data set
does not match, cannot understand, out of resources) instead of a bare "no presentation context". The
status is returned only after the instance and its row are committed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from radiology.dicomnet import inbox
from radiology.dicomnet.models import DicomInstance

logger = logging.getLogger(__name__)

# DIMSE C-STORE statuses (PS3.4 Annex B.2.3, PS3.7 Annex C).
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

REFUSAL_STATUS = {
    inbox.Refusal.SOP_CLASS: STATUS_SOP_CLASS_NOT_SUPPORTED,
    inbox.Refusal.NOT_A_RADIOGRAPH: STATUS_DATASET_DOES_NOT_MATCH,
    inbox.Refusal.MISSING_ATTRIBUTE: STATUS_DATASET_DOES_NOT_MATCH,
    inbox.Refusal.TOO_LARGE: STATUS_OUT_OF_RESOURCES,
    inbox.Refusal.STORAGE: STATUS_OUT_OF_RESOURCES,
    inbox.Refusal.UNREADABLE: STATUS_CANNOT_UNDERSTAND,
}


@dataclass(frozen=True)
class ListenerConfig:
    ae_title: str
    host: str
    port: int
    allowed_calling_ae_titles: tuple[str, ...] = ()
    max_associations: int = 10
    max_pdu_bytes: int = 262_144
    network_timeout: float = 60.0

    @classmethod
    def from_settings(cls, **overrides: Any) -> ListenerConfig:
        values: dict[str, Any] = {
            "ae_title": settings.DICOM_AE_TITLE,
            "host": settings.DICOM_BIND_ADDRESS,
            "port": settings.DICOM_PORT,
            "allowed_calling_ae_titles": tuple(settings.DICOM_ALLOWED_CALLING_AE_TITLES),
            "max_associations": settings.DICOM_MAX_ASSOCIATIONS,
            "max_pdu_bytes": settings.DICOM_MAX_PDU_BYTES,
            "network_timeout": settings.DICOM_NETWORK_TIMEOUT_SECONDS,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def _status(code: int, comment: str = "") -> Any:
    from pydicom import Dataset

    status = Dataset()
    status.Status = code
    if comment:
        # ErrorComment is an LO: at most 64 characters.
        status.ErrorComment = comment[:64]
    return status


def handle_store(event: Any) -> Any:
    """EVT_C_STORE: receive one instance through the inbox service; answer with its status."""
    close_old_connections()
    try:
        data = event.encoded_dataset()
        calling = str(event.assoc.requestor.ae_title or "").strip()
        outcome = inbox.dicom_instance_receive(
            data=data, source=DicomInstance.Source.C_STORE, calling_ae_title=calling
        )
    except Exception:
        # A database or storage failure: the sender keeps the instance and may try again later.
        logger.exception("C-STORE could not be processed")
        return _status(STATUS_OUT_OF_RESOURCES, "The instance could not be stored; try again later.")
    if outcome.ok:
        return _status(STATUS_SUCCESS)
    logger.info(
        "C-STORE from %s refused (%s): %s", event.assoc.requestor.ae_title, outcome.reason, outcome.message
    )
    return _status(REFUSAL_STATUS.get(outcome.reason, STATUS_CANNOT_UNDERSTAND), outcome.message)


def handle_echo(event: Any) -> int:
    return STATUS_SUCCESS


def _close_connection(event: Any) -> None:
    """Each association runs in its own thread, with its own database connection: close it at the end."""
    connection.close()


@dataclass
class DicomListener:
    """A running C-STORE SCP. `port` is the bound port (useful when 0 asked the system for a free one)."""

    config: ListenerConfig
    _server: Any = field(default=None, init=False)
    _ae: Any = field(default=None, init=False)

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.config.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu_bytes
        ae.network_timeout = self.config.network_timeout
        ae.acse_timeout = self.config.network_timeout
        ae.dimse_timeout = self.config.network_timeout
        ae.require_called_aet = True  # a sender addressing another AE title has the wrong node
        if self.config.allowed_calling_ae_titles:
            ae.require_calling_aet = list(self.config.allowed_calling_ae_titles)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, handle_store),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_RELEASED, _close_connection),
            (evt.EVT_ABORTED, _close_connection),
        ]
        self._ae = ae
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            # Associations still open (a sender gone silent) end now rather than at their network timeout.
            for association in list(self._server.active_associations):
                association.abort()
            self._server.shutdown()
            self._server = None


class FilingLoop(threading.Thread):
    """Files quiet arrivals every DICOM_POLL_INTERVAL_SECONDS (the beat task does the same elsewhere;
    filing claims each arrival under a row lock, so the two never file one twice)."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="dicom-filing", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            close_old_connections()
            try:
                filed = inbox.dicom_arrivals_file_due()
            except Exception:
                logger.exception("filing DICOM arrivals failed; trying again")
                continue
            if filed:
                logger.info("filed %d DICOM arrival(s)", len(filed))
        connection.close()

    def stop(self) -> None:
        self.stopped.set()
