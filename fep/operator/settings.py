"""The operator tier's settings, typed: ``[http]``, ``[manhole]``, ``[alarms]`` and
``[northbound]`` (fep.config reads them from the ini file; etc/fep.ini documents each), and
what the operator tier reads of the daemon's whole configuration (``OperatorConfig``, which
fep.config.Config provides)."""

from __future__ import annotations

from typing import Protocol

import attrs

from fep.collect.settings import CollectSection


def _endpoint(listen: str, port: int, interface: str) -> str:
    if listen:
        return listen
    if not port:
        return ""
    # Colons and backslashes of an IPv6 interface are escaped in an endpoint string.
    escaped = interface.replace("\\", "\\\\").replace(":", "\\:")
    return f"tcp:{port}:interface={escaped}"


@attrs.frozen
class HttpSection:
    port: int
    interface: str
    tokens_file: str
    metrics_auth: bool
    body_limit_unauthenticated: int = 4096
    body_limit: int = 1048576
    auth_failures: int = 10
    auth_failure_window: float = 60.0
    auth_block: float = 300.0
    # Twisted server endpoint, e.g. tcp:8080:interface=127.0.0.1; empty: port and interface.
    listen: str = ""

    def endpoint(self) -> str:
        """Where the web server listens: ``listen``, else tcp:PORT on ``interface``; empty
        when it is off."""
        return _endpoint(self.listen, self.port, self.interface)


@attrs.frozen
class ManholeSection:
    port: int
    interface: str
    authorized_keys: str
    host_key: str
    # Twisted server endpoint, e.g. tcp:2222:interface=127.0.0.1; empty: port and interface.
    listen: str = ""

    def endpoint(self) -> str:
        """Where the console listens: ``listen``, else tcp:PORT on ``interface``; empty when
        it is off."""
        return _endpoint(self.listen, self.port, self.interface)


@attrs.frozen
class AlarmsSection:
    enabled: bool
    table: str
    debounce: float
    smtp_host: str
    smtp_port: int
    mail_from: str


@attrs.frozen
class NorthboundSection:
    amqp_url: str
    exchange: str
    batch: int


class NodeSettings(Protocol):
    """``[fep]``: this node's name and data directory."""

    @property
    def node(self) -> str: ...

    @property
    def data_dir(self) -> str: ...


class OperatorConfig(Protocol):
    """What the operator tier reads of the daemon's configuration (fep.config.Config)."""

    @property
    def fep(self) -> NodeSettings: ...

    @property
    def collect(self) -> CollectSection: ...

    @property
    def http(self) -> HttpSection: ...

    @property
    def manhole(self) -> ManholeSection: ...

    @property
    def alarms(self) -> AlarmsSection: ...

    @property
    def northbound(self) -> NorthboundSection: ...
