"""The DICOM node's settings: a TOML file (`cmrvsr-fast serve --config node.toml`), then command-line flags over
it, checked once at start so that a typo stops the node with a message instead of surfacing on the first study.

Every key, its default and its meaning: docs/dicom-node.md "Configuration".
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 characters of the default repertoire, no backslash
OTHER_SOP_CLASSES = ("refuse", "pass-through")


class ConfigError(ValueError):
    """A setting that cannot be used, named with the reason."""


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """'AE@HOST:PORT' (an IPv6 host in brackets: 'PACS@[::1]:4242')."""
        match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@\[\]]+):(\d+)", text.strip())
        if not match:
            raise ConfigError(f"forward {text!r}: expected AE@HOST:PORT, e.g. PACS@10.1.2.3:104")
        ae, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        check_ae_title(ae, f"forward {text!r}")
        check_port(port, f"forward {text!r}")
        return cls(ae, host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass
class NodeConfig:
    """What `serve` runs with; the field comments are the TOML keys' meanings."""

    ae_title: str = "CMRVSR"  # this node's AE title (the called AE title senders use)
    host: str = "0.0.0.0"  # the address to listen on
    port: int = 11112  # the DICOM port to listen on
    spool: Path = Path("cmrvsr-spool")  # received instances, results and the journal (journal.sqlite)
    forward: list[Destination] = field(default_factory=list)  # where derived series go (C-STORE)
    allow: list[str] = field(default_factory=list)  # calling AE titles that may send; empty: any
    allow_hosts: list[str] = field(default_factory=list)  # peer addresses or networks (CIDR); empty: any
    quiet_seconds: float = 10.0  # a series is complete when nothing arrived for it for this long
    other_sop_classes: str = "refuse"  # non-MR objects: "refuse" at association, or "pass-through" unchanged
    device: str = "auto"
    weights: str | None = None  # a checkpoint or exported artifact; default: the embedded default of `scale`
    scale: int = 4
    precision: str = "auto"
    workers: int = 1  # series upscaled at once (each on the one model loaded at start)
    max_attempts: int = 3  # tries of a series whose processing raised, before it is marked failed
    retry_seconds: float = 5.0  # the first wait before a retry (processing or forwarding); doubled each time
    retry_max_seconds: float = 300.0  # the longest wait between forwarding tries (a destination down is retried
    # for ever: it delays, never loses)
    min_free_mb: int = 1024  # C-STORE answers "out of resources" while the spool's disk has less free space
    retention_hours: float = 24.0  # what was sent is deleted from the spool this long after (the journal keeps
    # the row)
    tls_cert: Path | None = None  # TLS: this node's certificate chain (PEM); with tls_key, TLS is on
    tls_key: Path | None = None
    tls_ca: Path | None = None  # TLS: the CA that client certificates must chain to; then clients must have one
    metrics_port: int | None = None  # HTTP /metrics (Prometheus text) and /health on 127.0.0.1; None: off
    metrics_host: str = "127.0.0.1"
    network_timeout: float = 60.0  # seconds without traffic before an association is aborted

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def check(self) -> NodeConfig:
        check_ae_title(self.ae_title, "ae_title")
        check_port(self.port, "port")
        for title in self.allow:
            check_ae_title(title, "allow")
        for network in self.allow_hosts:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"allow_hosts {network!r}: not an IP address or network (CIDR)") from None
        if self.other_sop_classes not in OTHER_SOP_CLASSES:
            raise ConfigError(f"other_sop_classes {self.other_sop_classes!r}: expected one of {OTHER_SOP_CLASSES}")
        if self.scale not in (2, 3, 4):
            raise ConfigError(f"scale {self.scale}: expected 2, 3 or 4")
        for name in ("quiet_seconds", "retry_seconds", "retry_max_seconds", "retention_hours", "network_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)}: may not be negative")
        if self.workers < 1 or self.max_attempts < 1 or self.min_free_mb < 0:
            raise ConfigError("workers and max_attempts must be 1 or more, min_free_mb 0 or more")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both for TLS, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_ca (client certificates) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path}: no such file")
        if self.metrics_port is not None:
            check_port(self.metrics_port, "metrics_port")
        return self


def check_ae_title(title: str, what: str) -> None:
    if not AE_TITLE.match(title) or not title.strip():
        raise ConfigError(f"{what} {title!r}: an AE title is 1-16 printable characters, no backslash")


def check_port(port: int, what: str) -> None:
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: port {port} outside 0-65535")


_PATHS = {"spool", "tls_cert", "tls_key", "tls_ca"}


def from_mapping(values: dict, base: NodeConfig | None = None, where: str = "config") -> NodeConfig:
    """Settings from a mapping (the TOML file's table, or flags), over `base`; unknown keys are refused."""
    config = base or NodeConfig()
    known = {f.name: f for f in fields(NodeConfig)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if name == "forward":
            value = [d if isinstance(d, Destination) else Destination.parse(d) for d in _as_list(value, key)]
        elif name in ("allow", "allow_hosts"):
            value = [str(v) for v in _as_list(value, key)]
        elif name in _PATHS and value is not None:
            value = Path(value)
        elif value is not None and known[name].type in ("int", "int | None"):
            value = _typed(int, value, key, where)
        elif value is not None and known[name].type == "float":
            value = _typed(float, value, key, where)
        setattr(config, name, value)
    return config


def _as_list(value, key: str) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _typed(kind, value, key: str, where: str):
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} = {value!r}: expected a number")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} = {value!r}: expected a number") from None


def load_config(path: Path | None, flags: dict) -> NodeConfig:
    """The TOML file's settings (its [node] table, or its top level), then the flags given (None: not given)."""
    config = NodeConfig()
    if path is not None:
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
        config = from_mapping(table.get("node", table), config, str(path))
    given = {key: value for key, value in flags.items() if value not in (None, [])}
    return from_mapping(given, config, "flags").check()
