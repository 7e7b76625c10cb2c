"""The DIMSE application entity: Verification and the five UPS SOP Classes as SCP.

:func:`start_dimse` builds a pynetdicom AE from the :class:`~worklist.config.Settings`
and starts it in the background; :class:`DimseServer` owns it and stops it.

Association policy (issue 3, point 4):

* the called AE title must be ours (``require_called_aet``); calling AE titles are
  restricted to ``allowed_calling_aets`` when that list is not empty;
* peers that are not on the loopback interface are refused with an A-ASSOCIATE-RJ
  (rejected-permanent, service-user, no-reason-given) unless ``dimse_allow_remote``;
* ACSE, DIMSE and network timeouts and the maximum number of concurrent associations
  come from the settings (beyond it: A-ASSOCIATE-RJ rejected-transient, local limit
  exceeded);
* TCP_NODELAY is set on every accepted socket: without it Nagle's algorithm and delayed
  ACKs add 40-90 ms to each exchange of small DIMSE messages on loopback.

Logging: pynetdicom logs every DIMSE message at INFO (one line per C-FIND match) and
binds PDU/DIMSE dump handlers that format each PDU under the AE-wide lock; it also
renders every C-FIND identifier and response for the log even when nothing is logged.
Unless its ``pynetdicom`` logger is enabled for DEBUG, the dump handlers are unbound from
our server, ``pynetdicom._config.LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS``
are turned off (process-wide switches) and, when the logger has no level of its own, it
is set to WARNING; the adapter logs refusals itself (logger ``dimse``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from worklist.config import Settings
from worklist.service import WorklistService
from worklist.values import UPS_SOP_CLASSES, VERIFICATION

from .find import FindHandler
from .handlers import UPSHandlers

__all__ = ["DimseServer", "start_dimse", "build_ae", "is_loopback"]

log = logging.getLogger("dimse")

# PS3.8 Table 9-21: A-ASSOCIATE-RJ result, source and reason.
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_NO_REASON_GIVEN = 0x01


def is_loopback(address: str) -> bool:
    """Whether ``address`` (IPv4, IPv6 or IPv4-mapped IPv6) is on the loopback interface."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _set_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: disable Nagle's algorithm on the accepted socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. a socket type without TCP options
        log.debug("TCP_NODELAY not set: %s", exc)


def _refuse_remote(event: Any) -> None:
    """EVT_REQUESTED: reject peers off the loopback interface (pynetdicom lets an
    EVT_REQUESTED handler answer A-ASSOCIATE-RJ itself; it then skips negotiation)."""
    assoc = event.assoc
    address = str(assoc.requestor.address)
    if is_loopback(address):
        return
    log.warning("Association from %s (%s) rejected: remote peers are not allowed "
                "(set dimse_allow_remote)", address, assoc.requestor.ae_title)
    assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, _NO_REASON_GIVEN)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _quiet_pynetdicom(server: ThreadedAssociationServer) -> None:
    """See the module docstring, "Logging"."""
    logger = logging.getLogger("pynetdicom")
    if logger.isEnabledFor(logging.DEBUG):
        return
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    # Documented switches (pynetdicom._config): without them every C-FIND identifier and
    # every Pending response is rendered with pretty_dataset() even when not logged.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    for event in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT):
        for handler, _args in list(server.get_handlers(event)):  # type: ignore[misc]
            if getattr(handler, "__module__", "").startswith("pynetdicom."):
                server.unbind(event, handler)


def build_ae(settings: Settings) -> AE:
    """The AE with its contexts, AE title checks, timeouts and association limit."""
    ae = AE(ae_title=settings.ae_title)
    # pynetdicom's default transfer syntaxes: Implicit VR LE, Explicit VR LE,
    # Deflated Explicit VR LE and Explicit VR BE.
    ae.add_supported_context(VERIFICATION)
    for uid in UPS_SOP_CLASSES:
        ae.add_supported_context(uid)
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_associations = settings.max_associations
    return ae


class DimseServer:
    """A running DIMSE service: its AE, its listening server and the bound port."""

    def __init__(self, ae: AE, server: ThreadedAssociationServer) -> None:
        self.ae = ae
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    def stop(self) -> None:
        """Stop listening, then abort the associations still open."""
        active = list(self.server.active_associations)
        self.server.shutdown()
        for assoc in active:
            if assoc.is_established:
                assoc.abort()

    def __enter__(self) -> DimseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_dimse(service: WorklistService, settings: Settings, *,
                port: int | None = None) -> DimseServer:
    """Start the DIMSE service in the background on ``settings.http_host``.

    ``port`` overrides ``settings.dimse_port`` (0 lets the OS choose; read the bound
    port from :attr:`DimseServer.port`).  ``settings.dimse_port == 0`` means "DIMSE
    disabled" to the caller: do not call this function then.
    """
    ae = build_ae(settings)
    ups = UPSHandlers(service)
    find = FindHandler(service)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, _set_nodelay),
        (evt.EVT_N_CREATE, ups.n_create),
        (evt.EVT_N_SET, ups.n_set),
        (evt.EVT_N_GET, ups.n_get),
        (evt.EVT_N_ACTION, ups.n_action),
        (evt.EVT_N_EVENT_REPORT, ups.n_event_report),
        (evt.EVT_C_FIND, find),
    ]
    if not settings.dimse_allow_remote:
        handlers.append((evt.EVT_REQUESTED, _refuse_remote))
    address = (settings.http_host, settings.dimse_port if port is None else port)
    server = ae.start_server(address, block=False, evt_handlers=handlers)
    assert server is not None
    _quiet_pynetdicom(server)
    log.debug("DIMSE service %s listening on %s:%d", settings.ae_title,
             server.server_address[0], server.server_address[1])
    return DimseServer(ae, server)
