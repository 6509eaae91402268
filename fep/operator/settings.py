"""The operator tier's settings, typed: ``[http]``, ``[manhole]``, ``[alarms]``,
``[northbound]`` and ``[control]``, declared with their options (fep.options; fep.config reads
them from the ini file; etc/fep.ini documents each), and
what the operator tier reads of the daemon's whole configuration (``OperatorConfig``, which
fep.config.Config provides)."""

from __future__ import annotations

from typing import Protocol

import attrs

from fep.collect.settings import CollectSection
from fep.options import (
    Option,
    Section,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    text,
    yes_no,
)


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


@attrs.frozen
class ControlSection:
    socket: str
    enabled: bool


HTTP = Section("http", {
    "port": Option(port, 0, "port of the API, status page and metrics; 0: off"),
    "interface": Option(text, "127.0.0.1", "address the web server listens on"),
    "tokens_file": Option(text, "", "file of NAME ROLE TOKEN lines (API and metrics)"),
    "metrics_auth": Option(yes_no, True, "/metrics needs a token too"),
    "body_limit_unauthenticated": Option(positive_int, 4096, "bytes of request body "
                                         "read from a request without a valid token"),
    "body_limit": Option(positive_int, 1048576, "bytes of request body read from a "
                         "request with a valid token"),
    "auth_failures": Option(non_negative_int, 10, "failed logins (401) from one address "
                            "within auth_failure_window before it gets 429; 0: no limit"),
    "auth_failure_window": Option(positive_float, 60.0, "seconds auth_failures are "
                                  "counted over"),
    "auth_block": Option(positive_float, 300.0, "seconds an address that failed too "
                         "often is refused (429)"),
    "listen": Option(text, "", "listener (Twisted server endpoint) of the web server, "
                     "e.g. tcp:8080:interface=127.0.0.1; empty: port and interface"),
}, HttpSection)

MANHOLE = Section("manhole", {
    "port": Option(port, 0, "SSH port of the operator console; 0: off"),
    "interface": Option(text, "127.0.0.1", "address the console listens on"),
    "authorized_keys": Option(text, "", "OpenSSH authorized_keys file of operators"),
    "host_key": Option(text, "", "host key file (made at first start); empty: "
                       "DATA_DIR/manhole_host_key"),
    "listen": Option(text, "", "listener (Twisted server endpoint) of the console, "
                     "e.g. tcp:2222:interface=127.0.0.1; empty: port and interface"),
}, ManholeSection)

ALARMS = Section("alarms", {
    "enabled": Option(yes_no, True, "classify events into alarms and notify"),
    "table": Option(text, "", "alarm table file (classification, rules); empty: the "
                    "built-in classification and no notifications"),
    "debounce": Option(positive_float, 300.0, "seconds a repeated alarm of a meter "
                       "and kind is counted, not raised again"),
    "smtp_host": Option(text, "127.0.0.1", "SMTP relay for e-mail notifications"),
    "smtp_port": Option(port, 25, "its port"),
    "mail_from": Option(text, "fep@localhost", "sender address of alarm e-mail"),
}, AlarmsSection)

NORTHBOUND = Section("northbound", {
    "amqp_url": Option(text, "", "AMQP broker, e.g. amqp://guest:guest@127.0.0.1:5672/%2F; "
                       "empty: off"),
    "exchange": Option(text, "fep", "topic exchange records are published to"),
    "batch": Option(positive_int, 500, "most records in flight to the broker"),
}, NorthboundSection)

CONTROL = Section("control", {
    "socket": Option(
        text, "", "control socket (UNIX, JSON lines) for fep sessions; empty: DATA_DIR/"
        "control.sock"
    ),
    "enabled": Option(yes_no, True, "listen on the control socket"),
}, ControlSection)


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
