"""The composition root: builds every part from the settings, in one place.

The command line calls :func:`build` and :func:`serve`; nothing else reads
configuration or wires parts together.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from .config import Settings, SettingsError
from .follower import CursorStore, Follower
from .labelsets import LabelSetError, load_label_sets
from .orthanc import OrthancClient
from .routing import Router, RoutingError, parse_rules
from .service import WorklistService
from .store import Store, open_store

__all__ = ["Application", "build", "serve"]

log = logging.getLogger("worklist")


@dataclass
class Application:
    settings: Settings
    store: Store
    service: WorklistService
    http_app: Any
    dimse: Any = None
    orthanc: Any = None
    """The Orthanc client (issue 5), when ``orthanc_url`` is set."""
    router: Any = None
    follower: Any = None
    purger: threading.Thread | None = None
    senders: list[Any] = field(default_factory=list)
    """The N-EVENT-REPORT sender process (dimse.eventprocess)."""
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start_purger(self) -> None:
        """Housekeeping every few minutes: purge expired finished workitems
        (``retention_hours``, 0 = keep) and the outbox events no subscriber can still
        need (``event_retention_hours``)."""
        if self.purger is not None:
            return
        hours, event_hours = self.settings.retention_hours, self.settings.event_retention_hours
        period = min(600.0, max(1.0, min(h for h in (hours, event_hours, 1.0) if h > 0)
                                * 3600 / 10))

        def run() -> None:
            while not self._stopping.wait(period):
                self.housekeeping(hours, event_hours)

        self.purger = threading.Thread(target=run, name="housekeeping", daemon=True)
        self.purger.start()

    def housekeeping(self, hours: float, event_hours: float) -> None:
        try:
            if hours > 0:
                purged = self.service.purge_expired(hours * 3600)
                if purged:
                    log.info("retention: purged %d finished workitems", len(purged))
            if event_hours > 0:
                pruned = self.service.prune_events(event_hours * 3600)
                if pruned:
                    log.info("outbox: removed %d delivered or expired events", pruned)
        except Exception:
            log.exception("housekeeping failed")

    def close(self) -> None:
        self._stopping.set()
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if self.orthanc is not None:
            self.orthanc.close()
        if self.dimse is not None:
            self.dimse.stop()
            self.dimse = None
        for sender in self.senders:
            sender.stop()
        self.senders = []
        self.service.hub.stop()
        self.store.engine.dispose()


def build(settings: Settings) -> Application:
    """Open the database and build the service and the HTTP application."""
    from dicomweb.app import create_app

    try:  # refused before anything starts
        label_sets = load_label_sets(settings.label_sets_file or None)
        rules = parse_rules(settings.routing_rules, label_sets)
    except (RoutingError, LabelSetError) as exc:
        raise SettingsError(str(exc)) from None
    store = open_store(settings.database_url)
    orthanc = (OrthancClient(settings.orthanc_url, aet=settings.orthanc_aet,
                             dicomweb_root=settings.orthanc_dicomweb_root,
                             timeout=settings.orthanc_timeout)
               if settings.orthanc_url else None)
    service = WorklistService(store, default_worklist_label=settings.default_worklist_label,
                              image_store=orthanc,
                              page_cache_bytes=settings.search_cache_mb << 20,
                              # PS3.4 CC.2.3: a DIMSE subscriber must have a known address
                              known_ae=lambda ae: ae in settings.peers,
                              grant_deletion_locks=settings.grant_deletion_locks)
    http_app = create_app(service, max_body_bytes=settings.max_body_bytes,
                          search_default_limit=settings.search_default_limit,
                          search_max_limit=settings.search_max_limit, users=settings.users)
    app = Application(settings, store, service, http_app, orthanc=orthanc)
    if orthanc is not None:
        app.router = Router(service, store, orthanc, rules)
        app.follower = Follower(orthanc, app.router, CursorStore(store, orthanc.url),
                                poll_seconds=settings.orthanc_poll_seconds)
    return app


def _start_dimse(app: Application) -> None:
    if not app.settings.dimse_port:
        return
    try:
        from dimse.server import start_dimse
    except ImportError:  # pragma: no cover - the DIMSE adapter is part of the package
        log.warning("DIMSE adapter not available; serving UPS-RS only")
        return
    app.dimse = start_dimse(app.service, app.settings)
    if app.settings.peers:
        # N-EVENT-REPORT senders in a child process reading the same outbox: they do not
        # compete with the requests for this process's interpreter (dimse.eventprocess)
        from dimse.eventprocess import SenderProcess
        app.senders = [SenderProcess(app.settings.database_url, app.settings.peers,
                                     app.settings.ae_title, timeout=app.settings.dimse_timeout,
                                     log_level=app.settings.log_level).start()]
    log.info("DIMSE: AE %s listening on %s:%s", app.settings.ae_title, app.settings.http_host,
             app.settings.dimse_port)


def serve(settings: Settings) -> None:
    """Run the HTTP and DIMSE servers until SIGTERM or Ctrl-C."""
    import uvicorn

    from dicomweb.wsframes import FramesWebSocketProtocol

    # uvicorn stops on SIGTERM, then restores this handler and re-raises the signal: a
    # requested stop exits 0 (after the finally below), not as killed by SIGTERM.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app = build(settings)
    try:
        _announce(app, "RESTARTED")
        app.start_purger()
        _start_dimse(app)
        if app.follower is not None:
            app.follower.start()
            log.info("following Orthanc at %s (AE %s)", app.orthanc.url, app.orthanc.aet)
        config = uvicorn.Config(app.http_app, host=settings.http_host, port=settings.http_port,
                                log_level=settings.log_level.lower(), access_log=False,
                                lifespan="off", timeout_graceful_shutdown=10,
                                # events are small; compressing each frame once per
                                # subscriber would cost more than sending it
                                ws_per_message_deflate=False, ws=FramesWebSocketProtocol)
        server = uvicorn.Server(config)
        log.info("UPS-RS: http://%s:%s/dicom-web/workitems (database %s)", settings.http_host,
                 settings.http_port, app.store.engine.url.render_as_string(hide_password=True))
        server.run()  # installs SIGTERM/SIGINT handlers and drains requests on shutdown
    finally:
        _announce(app, "GOING DOWN")
        app.close()
        log.info("worklist stopped")


def _announce(app: Application, scp_status: str) -> None:
    """PS3.4 CC.2.4.3: SCP Status Change to the subscribers (into the outbox)."""
    try:
        app.service.announce_scp_status(scp_status)
    except Exception:  # never keeps the server from starting or stopping
        log.exception("cannot record the SCP Status Change %s", scp_status)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)
