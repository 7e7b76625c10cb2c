"""Settings: defaults, then a TOML config file, then ``WORKLIST_*`` environment
variables, then command-line options, each overriding the one before.

Only :func:`load_settings` reads files or the environment; everything else receives
a :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Settings", "load_settings", "SettingsError"]


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names it."""


@dataclass
class Settings:
    data_dir: str = "var"
    """Where the embedded database (and other state) lives."""
    database: str = ""
    """SQLAlchemy URL; empty means ``sqlite:///{data_dir}/worklist.db``."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ae_title: str = "WORKLIST"
    dimse_port: int = 11112
    """0 disables the DIMSE service."""
    allowed_calling_aets: list[str] = field(default_factory=list)
    """Calling AE titles accepted over DIMSE; empty accepts any (loopback peers only,
    unless ``dimse_allow_remote`` is set)."""
    dimse_allow_remote: bool = False
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_associations: int = 16
    peers: dict[str, str] = field(default_factory=dict)
    """AE title → ``host:port`` of DICOM peers (event subscribers, C-MOVE destinations)."""
    retention_hours: float = 0.0
    """COMPLETED and CANCELED workitems unchanged this long are purged (410 Gone after),
    unless a subscriber holds a Deletion Lock on them; 0 keeps them forever."""
    event_retention_hours: float = 72.0
    """Outbox events are kept until every subscriber has received them, and at most this
    long: the bound of what an offline subscriber is replayed when it reconnects."""
    grant_deletion_locks: bool = True
    """False: subscriptions asking for a Deletion Lock get it refused (B301, PS3.4 CC.2.3)."""
    default_worklist_label: str = "default"
    search_default_limit: int = 100
    search_max_limit: int = 1000
    search_cache_mb: int = 32
    """Memory for recent search pages (served while the database is unchanged); 0 = off."""
    max_body_bytes: int = 16 * 1024 * 1024
    users: dict[str, str] = field(default_factory=dict)
    """User name → API token, for clients that are not on the loopback interface."""
    log_level: str = "INFO"
    orthanc_url: str = ""
    """Orthanc's REST URL; empty: no image store (no routing, no output verification)."""
    orthanc_aet: str = "ORTHANC"
    orthanc_dicom_port: int = 4242
    orthanc_dicomweb_root: str = "/dicom-web"
    orthanc_poll_seconds: float = 1.0
    """How long the follower sleeps when Orthanc's change feed is exhausted."""
    orthanc_timeout: float = 10.0
    label_sets_file: str = ""
    """TOML file of label sets (issue 6); empty: ``config/labelsets.toml``."""
    routing_rules: list[dict[str, Any]] | None = None
    """The ``[[routing.rules]]`` tables of the config file, validated by
    :func:`worklist.routing.parse_rules`; None: the default rule."""

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{Path(self.data_dir).resolve() / 'worklist.db'}"

    def validate(self) -> Settings:
        if not 0 < self.http_port < 65536:
            raise SettingsError(f"http_port {self.http_port} is not a TCP port")
        if not 0 <= self.dimse_port < 65536:
            raise SettingsError(f"dimse_port {self.dimse_port} is not a TCP port")
        if not self.ae_title or len(self.ae_title) > 16 or "\\" in self.ae_title \
                or not self.ae_title.isascii() or self.ae_title.strip() != self.ae_title:
            raise SettingsError(f"ae_title '{self.ae_title}' is not a valid AE title "
                                "(1-16 ASCII characters, no backslash, no leading/trailing space)")
        if not 1 <= self.search_default_limit <= self.search_max_limit:
            raise SettingsError("search_default_limit must be between 1 and search_max_limit")
        if not 0 < self.orthanc_dicom_port < 65536:
            raise SettingsError(f"orthanc_dicom_port {self.orthanc_dicom_port} is not a TCP port")
        if self.orthanc_poll_seconds <= 0:
            raise SettingsError("orthanc_poll_seconds must be positive")
        for aet, addr in self.peers.items():
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"peer {aet}: '{addr}' is not HOST:PORT")
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind == "list[str]":
            return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) \
                else [str(v) for v in value]
        if kind == "dict[str, str]":
            if isinstance(value, str):
                pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
                return {k.strip(): v.strip() for k, v in pairs}
            return {str(k): str(v) for k, v in dict(value).items()}
        return str(value)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"setting {name}: invalid value {value!r} ({exc})") from None


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the file, the environment and explicit overrides."""
    values: dict[str, Any] = {}
    env = dict(os.environ if env is None else env)
    config_file = config_file or env.get("WORKLIST_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        routing = data.get("routing")
        if isinstance(routing, dict) and "rules" in routing:
            if not isinstance(routing["rules"], list):
                raise SettingsError(f"config file {path}: routing.rules must be an array of "
                                    "tables ([[routing.rules]])")
            values["routing_rules"] = routing["rules"]
        server = data.get("server", data)
        for key, value in server.items():
            if isinstance(value, dict) and key not in ("peers", "users"):
                continue  # other sections belong to other parts (routing, label sets)
            if key not in _FIELDS:
                raise SettingsError(f"config file {path}: unknown setting '{key}'")
            values[key] = _coerce(key, value)
    for name in _FIELDS:
        if name == "routing_rules":
            continue  # only from the file
        key = "WORKLIST_" + name.upper()
        if key in env:
            values[name] = _coerce(name, env[key])
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value) if not isinstance(value, (dict, list)) else value
    return Settings(**values).validate()
