"""The daemon's configuration: an ini file read into validated, frozen attrs classes.

Every option has one declaration below (section, key, type, default, meaning); `etc/fep.ini`
documents the same options for people. Any error names the file, the section and the key.
"""

from __future__ import annotations

import configparser
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fep.channels.identify import DEFAULT_REGISTRATION
from fep.collect.settings import CollectSection
from fep.errors import ConfigError
from fep.operator.settings import AlarmsSection, HttpSection, ManholeSection, NorthboundSection


@attrs.frozen
class Option:
    """One option of the ini file."""

    type: Callable[[str], Any]
    default: Any
    doc: str


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes/no, got {text!r}")


def _system_title(text: str) -> str:
    value = text.strip()
    if value and (len(value) != 16 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise ValueError("expected 8 bytes in hex (16 digits), or empty")
    return value.lower()


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive whole number, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a TCP port 0..65535 (0: off), got {text!r}")
    return value


def _level(text: str) -> str:
    value = text.strip().lower()
    if value not in ("debug", "info", "warn", "error", "critical"):
        raise ValueError(f"expected debug, info, warn, error or critical, got {text!r}")
    return value


def _text(text: str) -> str:
    return text.strip()


def _shared_lines(text: str) -> str:
    from fep.collect.limits import parse_pools

    try:
        parse_pools(text)
    except ConfigError as e:
        raise ValueError(e.message) from None
    return text.strip()


def _approval(text: str) -> str:
    from fep.collect.commands import parse_approval

    try:
        parse_approval(text)
    except ConfigError as e:
        raise ValueError(e.message) from None
    return text.strip()
def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind``, or None for an empty value (a [listeners] override left to the default)."""

    def parse(text: str) -> Any:
        return kind(text) if text.strip() else None

    parse.__name__ = f"optional_{kind.__name__}"
    return parse


_optional_count = _optional(_non_negative_int)
_optional_seconds = _optional(_non_negative_float)


def _listener_options() -> dict[str, Option]:
    """[listeners]: the limits of every listener, then NAME.KEY overrides per listener."""
    from fep.channels.listeners import BUILTIN_OVERRIDES, LISTENERS, ListenerLimits

    limits = ListenerLimits()
    docs = {
        "max_connections": "connections a listener holds open at once (0: no cap)",
        "max_per_source": "connections open at once from one source address (0: no cap)",
        "idle_timeout": "seconds without a byte from the peer before closing (0: never)",
        "max_unidentified_bytes": "bytes a peer may send before it is identified (0: no cap)",
    }
    options = {
        key: Option(_non_negative_float if key == "idle_timeout" else _non_negative_int,
                    getattr(limits, key), doc)
        for key, doc in docs.items()
    }
    for name in LISTENERS:
        for key, doc in docs.items():
            kind = _optional_seconds if key == "idle_timeout" else _optional_count
            default = BUILTIN_OVERRIDES.get(name, {}).get(key, "")
            options[f"{name}.{key}"] = Option(kind, default, f"{name}: {doc}; empty: [listeners] "
                                              f"{key}")
    return options


def modem_lines(text: str) -> list[tuple[str, str, str]]:
    """``[modems] lines``: one modem per line (or comma-separated), ``NAME ROUTE [MODEL]``
    -> (name, route, model or "")."""
    found: list[tuple[str, str, str]] = []
    for item in text.replace(",", "\n").splitlines():
        words = item.split()
        if not words:
            continue
        if len(words) not in (2, 3) or not words[1].startswith("serial:"):
            raise ValueError(f"expected NAME serial:DEVICE[:BAUD:FRAME] [MODEL], got {item!r}")
        if any(name == words[0] for name, _, _ in found):
            raise ValueError(f"modem {words[0]!r} named twice")
        found.append((words[0], words[1], words[2] if len(words) == 3 else ""))
    return found


def _modem_lines_text(text: str) -> str:
    for _, _, model in modem_lines(text):
        if model:
            _modem_model(model)
    return text.strip()


def _modem_model(text: str) -> str:
    from fep.channels.modem.at import PROFILES

    value = text.strip()
    if value not in PROFILES:
        raise ValueError(f"known models: {', '.join(sorted(PROFILES))}")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def choose(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return choose


_dialing = _choice("tone", "pulse")
_hangup = _choice("escape", "dtr")


def _sms_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in ("pdu", "text"):
        raise ValueError(f"expected pdu or text, got {text!r}")
    return value



def _sms_rules(text: str) -> tuple[str, ...]:
    from fep.collect.sms import parse_rules

    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    parse_rules(lines)  # ValueError names the rule
    return lines


_TYPE_NAMES: dict[Callable[[str], Any], str] = {
    _bool: "yes/no",
    _positive_float: "a positive number",
    _positive_int: "a positive whole number",
    _level: "a log level",
    _port: "a TCP port (0: off)",
    _text: "text",
    _system_title: "a DLMS system title (16 hex digits) or empty",
    _shared_lines: "SCHEME=LINES, ...",
    _approval: "a list of command names",
    _non_negative_float: "a number >= 0",
    _non_negative_int: "a whole number >= 0",
    _modem_lines_text: "modem lines",
    _modem_model: "a modem model",
    _dialing: "tone or pulse",
    _hangup: "escape or dtr",
    _sms_mode: "pdu or text",
    _sms_rules: "rule lines '<pattern> => <kind> [severity] [code]'",
    _optional_count: "a whole number >= 0, or empty",
    _optional_seconds: "a number >= 0, or empty",
}

# section -> key -> Option. Sections marked required must appear in the file.
SCHEMA: Mapping[str, Mapping[str, Option]] = {
    "fep": {
        "node": Option(_text, "fep-1", "name of this fep node (logs, job leases)"),
        "data_dir": Option(_text, "var", "directory for the spool and local state"),
    },
    "store": {
        "url": Option(
            _text,
            "sqlite:var/fep.sqlite",
            "sqlite:PATH (embedded default) or postgresql://user@host:port/db",
        ),
        "pool_size": Option(_positive_int, 2, "PostgreSQL connections kept open"),
    },
    "spool": {
        "directory": Option(_text, "", "journal directory; empty means DATA_DIR/spool"),
        "batch_size": Option(_positive_int, 5000, "most records per store transaction"),
        "max_delay": Option(_positive_float, 0.05, "seconds a record may wait to be batched"),
        "flush_timeout": Option(
            _positive_float, 30.0, "seconds shutdown waits for the store to commit the spool"
        ),
    },
    "collect": {
        "period": Option(_positive_float, 900.0, "seconds between two reads of a meter"),
        "timeout": Option(_positive_float, 10.0, "seconds a meter has to answer each step"),
        "concurrency": Option(_positive_int, 50, "meter sessions open at once, at most"),
        "enabled": Option(_bool, True, "run the collection engine (tasks, jobs, commands)"),
        "default_task": Option(
            _bool, True, "keep a task 'default' reading every meter's registers each period"
        ),
        "poll": Option(_positive_float, 1.0, "seconds between looks for jobs made elsewhere"),
        "lease": Option(
            _positive_float, 60.0, "seconds a node's lease on a job lasts (renewed meanwhile)"
        ),
        "shared_lines": Option(
            _shared_lines, "", "route schemes whose routes share a pool of lines: dialup=4"
        ),
        "cell_permits": Option(
            _non_negative_int, 0, "sessions one radio cell serves at once (0: any)"
        ),
        "apn_permits": Option(_non_negative_int, 0, "sessions one APN serves at once (0: any)"),
        "wakeup_timeout": Option(
            _positive_float, 120.0, "seconds to wait for a woken GPRS modem to dial in"
        ),
        "approval": Option(
            _approval,
            "disconnect, reconnect, firmware-upgrade",
            "commands that need approval by a second person before they run",
        ),
        "firmware_dir": Option(
            _text, "", "firmware images, named by firmware-upgrade; empty means DATA_DIR/firmware"
        ),
    },
    "push": {
        "iec62056_21": Option(
            _text,
            "",
            "listener (Twisted endpoint) for meters that connect and send an IEC 62056-21 "
            "readout, e.g. tcp:4060:interface=127.0.0.1; empty disables it",
        ),
        "dlms": Option(
            _text,
            "",
            "listener (Twisted endpoint) for DLMS Data-Notifications over the wrapper, e.g. "
            "tcp:4059:interface=0.0.0.0; empty disables it",
        ),
        "accept_unknown": Option(
            _bool, False, "store readouts from meters that are not in the meter list"
        ),
    },
    "dlms": {
        "system_title": Option(
            _system_title, "", "fep's DLMS client system title (16 hex digits); empty: "
            "FEP and 5 bytes of the SHA-256 of [fep] node, one per node"
        ),
    },
    "modems": {
        "lines": Option(
            _modem_lines_text, "", "dial-up modems, one per line: NAME serial:DEVICE[:BAUD:FRAME]"
            " [MODEL]; empty: no modem pool"
        ),
        "model": Option(_modem_model, "generic", "modem model of lines that name none"),
        "init": Option(_text, "", "init commands separated by |, instead of the model's"),
        "prefix": Option(_text, "", "dialled before every number (e.g. 0, for an outside line)"),
        "dialing": Option(_dialing, "tone", "tone (ATDT) or pulse (ATDP)"),
        "dial_timeout": Option(_positive_float, 60.0, "seconds for the result of a dial"),
        "guard": Option(_positive_float, 1.0, "escape guard time in seconds (the modems' S12)"),
        "hangup": Option(_hangup, "escape", "escape (+++ then ATH) or dtr (drop DTR)"),
        "hangup_timeout": Option(_positive_float, 10.0, "seconds for each hang-up step"),
        "busy_delay": Option(_non_negative_float, 30.0, "seconds before calling a BUSY site again"),
        "busy_retries": Option(_non_negative_int, 3, "times a BUSY site is called again"),
        "backoff": Option(_non_negative_float, 120.0, "first back-off after NO ANSWER/NO CARRIER"),
        "backoff_factor": Option(_positive_float, 2.0, "back-off growth per failed attempt"),
        "backoff_max": Option(_non_negative_float, 1800.0, "longest back-off in seconds"),
        "retries": Option(_non_negative_int, 2, "times a site is called again after back-off"),
        "open_timeout": Option(_positive_float, 10.0, "seconds to open a modem's port"),
    },
    "gprs": {
        "listen": Option(
            _text,
            "",
            "listeners (Twisted server endpoints, separated by spaces) where GPRS modems "
            "dial in, e.g. tcp:4070 ssl:4071:privateKey=key.pem:certKey=cert.pem; empty: none",
        ),
        "identify": Option(
            _text,
            "ascii binary dlms iec62056-21",
            "identification rules tried on a new connection's first bytes",
        ),
        "registration": Option(
            _text,
            DEFAULT_REGISTRATION,
            "regular expression of the ASCII registration line (groups imei, iccid, imsi, "
            "serial)",
        ),
        "unknown": Option(_text, "quarantine", "unknown modems: register, quarantine or reject"),
        "register_protocol": Option(
            _text, "dlms", "protocol of a meter registered from an ASCII or binary registration"
        ),
        "identify_timeout": Option(
            _positive_float, 60.0, "seconds a new connection has to identify itself"
        ),
        "idle_timeout": Option(
            _positive_float, 300.0, "seconds of silence after which a session is closed"
        ),
        "heartbeat": Option(
            _text, "", "heartbeat packets dropped from the stream (hex:A5FE or ASCII)"
        ),
        "max_garbage": Option(
            _positive_int, 4096, "bytes without a registration before a connection is closed"
        ),
        "connect_backoff": Option(
            _positive_float, 10.0, "seconds a line is not dialled again after a failed connect"
        ),
        "connect_backoff_max": Option(
            _positive_float, 600.0, "most seconds of backoff after failed connects in a row"
        ),
        "conflict": Option(
            _text, "keep", "a modem claiming a name a live session holds: keep (the incumbent) "
            "or replace-when-silent"
        ),
        "heartbeat_window": Option(
            _positive_float, 120.0, "seconds of silence after which a session no longer "
            "counts as answering (replace-when-silent)"
        ),
        "conflict_quarantine": Option(
            _positive_float, 30.0, "seconds a contested newcomer is held before it is closed"
        ),
        "allow": Option(
            _text, "", "source networks (CIDR) modems may connect from; LISTENER=CIDR for one "
            "listener; empty: any"
        ),
        "tls_client_ca": Option(
            _text, "", "CA certificates (PEM) that sign the modems' client certificates: every "
            "ssl: listener then requires one naming the modem; empty: none asked"
        ),
    },
    "control": {
        "socket": Option(
            _text, "", "control socket (UNIX, JSON lines) for fep sessions; empty: DATA_DIR/"
            "control.sock"
        ),
        "enabled": Option(_bool, True, "listen on the control socket"),
    },
    "sms": {
        "port": Option(
            _text,
            "",
            "route of the GSM modem for SMS, e.g. serial:/dev/ttyUSB2:115200:8N1; empty: no SMS",
        ),
        "mode": Option(_sms_mode, "pdu", "pdu (exact, any text) or text (AT+CMGF=1)"),
        "pin": Option(_text, "", "SIM PIN when the SIM asks for one (kept out of logs)"),
        "smsc": Option(_text, "", "service centre number; empty: the one stored on the SIM"),
        "memory": Option(_text, "SM", "message memory to read and store in (SM, ME, MT)"),
        "delivery_reports": Option(_bool, True, "ask for delivery reports of sent messages"),
        "validity": Option(_positive_float, 86400.0, "seconds the network tries to deliver"),
        "sweep_interval": Option(_positive_float, 300.0, "seconds between reads of the memory"),
        "command_timeout": Option(_positive_float, 10.0, "seconds the modem has per command"),
        "send_timeout": Option(_positive_float, 60.0, "seconds the modem has to send one part"),
        "wakeup_text": Option(_text, "WAKEUP", "text of the wake-up SMS (meter: sms_wakeup_text)"),
        "rules": Option(
            _sms_rules,
            (),
            "one rule a line: <regular expression> => <event kind> [severity] [code]; the first "
            "that matches a message from a meter's sms_number makes a MeterEvent",
        ),
    },
    "http": {
        "port": Option(_port, 0, "port of the API, status page and metrics; 0: off"),
        "interface": Option(_text, "127.0.0.1", "address the web server listens on"),
        "tokens_file": Option(_text, "", "file of NAME ROLE TOKEN lines (API and metrics)"),
        "metrics_auth": Option(_bool, True, "/metrics needs a token too"),
        "body_limit_unauthenticated": Option(_positive_int, 4096, "bytes of request body "
                                             "read from a request without a valid token"),
        "body_limit": Option(_positive_int, 1048576, "bytes of request body read from a "
                             "request with a valid token"),
        "auth_failures": Option(_non_negative_int, 10, "failed logins (401) from one address "
                                "within auth_failure_window before it gets 429; 0: no limit"),
        "auth_failure_window": Option(_positive_float, 60.0, "seconds auth_failures are "
                                      "counted over"),
        "auth_block": Option(_positive_float, 300.0, "seconds an address that failed too "
                             "often is refused (429)"),
        "listen": Option(_text, "", "listener (Twisted server endpoint) of the web server, "
                         "e.g. tcp:8080:interface=127.0.0.1; empty: port and interface"),
    },
    "manhole": {
        "port": Option(_port, 0, "SSH port of the operator console; 0: off"),
        "interface": Option(_text, "127.0.0.1", "address the console listens on"),
        "authorized_keys": Option(_text, "", "OpenSSH authorized_keys file of operators"),
        "host_key": Option(_text, "", "host key file (made at first start); empty: "
                           "DATA_DIR/manhole_host_key"),
        "listen": Option(_text, "", "listener (Twisted server endpoint) of the console, "
                         "e.g. tcp:2222:interface=127.0.0.1; empty: port and interface"),
    },
    "alarms": {
        "enabled": Option(_bool, True, "classify events into alarms and notify"),
        "table": Option(_text, "", "alarm table file (classification, rules); empty: the "
                        "built-in classification and no notifications"),
        "debounce": Option(_positive_float, 300.0, "seconds a repeated alarm of a meter "
                           "and kind is counted, not raised again"),
        "smtp_host": Option(_text, "127.0.0.1", "SMTP relay for e-mail notifications"),
        "smtp_port": Option(_port, 25, "its port"),
        "mail_from": Option(_text, "fep@localhost", "sender address of alarm e-mail"),
    },
    "northbound": {
        "amqp_url": Option(_text, "", "AMQP broker, e.g. amqp://guest:guest@127.0.0.1:5672/%2F; "
                           "empty: off"),
        "exchange": Option(_text, "fep", "topic exchange records are published to"),
        "batch": Option(_positive_int, 500, "most records in flight to the broker"),
    },
    "secrets": {
        "master_key": Option(
            _text, "", "master key of the secret store (meter keys and passwords, secret:NAME "
            "values): file:PATH (mode 0600), env:NAME or credential:NAME (systemd "
            "LoadCredential=); empty: file:DATA_DIR/master.key"
        ),
    },
    "listeners": _listener_options(),
    "log": {
        "level": Option(_level, "info", "least severe log level written"),
        "json_file": Option(_text, "", "also write JSON log events to this file; empty: no"),
    },
}
REQUIRED_SECTIONS = ("fep", "store")


@attrs.frozen
class FepSection:
    node: str
    data_dir: str


@attrs.frozen
class StoreSection:
    url: str
    pool_size: int


@attrs.frozen
class SpoolSection:
    directory: str
    batch_size: int
    max_delay: float
    flush_timeout: float


@attrs.frozen
class PushSection:
    iec62056_21: str
    dlms: str
    accept_unknown: bool


@attrs.frozen
class DlmsSection:
    system_title: str

    def client_system_title(self, node: str) -> bytes:
        """The configured title, else the one derived from the node name."""
        from fep.protocols.dlms.identity import node_system_title

        return bytes.fromhex(self.system_title) if self.system_title else node_system_title(node)


@attrs.frozen
class ModemsSection:
    lines: str
    model: str
    init: str
    prefix: str
    dialing: str
    dial_timeout: float
    guard: float
    hangup: str
    hangup_timeout: float
    busy_delay: float
    busy_retries: int
    backoff: float
    backoff_factor: float
    backoff_max: float
    retries: int
    open_timeout: float

    @property
    def init_commands(self) -> tuple[str, ...] | None:
        """The configured init commands, None for the model's own."""
        commands = tuple(c.strip() for c in self.init.split("|") if c.strip())
        return commands or None

    def line_list(self) -> list[tuple[str, str, str]]:
        """(name, serial route, model) of every modem line."""
        return [(name, route, model or self.model) for name, route, model in
                modem_lines(self.lines)]


@attrs.frozen
class GprsSection:
    listen: str
    identify: str
    registration: str
    unknown: str
    register_protocol: str
    identify_timeout: float
    idle_timeout: float
    heartbeat: str
    max_garbage: int
    connect_backoff: float
    connect_backoff_max: float
    conflict: str
    heartbeat_window: float
    conflict_quarantine: float
    allow: str
    tls_client_ca: str


@attrs.frozen
class ControlSection:
    socket: str
    enabled: bool


@attrs.frozen
class SmsSection:
    port: str
    mode: str
    pin: str = attrs.field(repr=False)
    smsc: str
    memory: str
    delivery_reports: bool
    validity: float
    sweep_interval: float
    command_timeout: float
    send_timeout: float
    wakeup_text: str
    rules: tuple[str, ...]


@attrs.frozen
class SecretsSection:
    master_key: str


@attrs.frozen
class ListenersSection:
    """[listeners]: limits every listener has unless it overrides them (fep.channels.listeners)."""

    max_connections: int
    max_per_source: int
    idle_timeout: float
    max_unidentified_bytes: int
    # listener name -> limit -> value, for the NAME.KEY options that are set.
    overrides: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @classmethod
    def from_values(cls, **values: Any) -> ListenersSection:
        general = {key: values.pop(key) for key in
                   ("max_connections", "max_per_source", "idle_timeout", "max_unidentified_bytes")}
        overrides: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if value is not None and value != "":
                name, _, limit = key.partition(".")
                overrides.setdefault(name, {})[limit] = value
        return cls(overrides=overrides, **general)


@attrs.frozen
class LogSection:
    level: str
    json_file: str


@attrs.frozen
class Config:
    """The whole, validated configuration of one fep daemon."""

    fep: FepSection
    store: StoreSection
    spool: SpoolSection
    collect: CollectSection
    push: PushSection
    dlms: DlmsSection
    log: LogSection
    modems: ModemsSection
    gprs: GprsSection
    control: ControlSection
    sms: SmsSection
    http: HttpSection
    manhole: ManholeSection
    alarms: AlarmsSection
    northbound: NorthboundSection
    secrets: SecretsSection
    listeners: ListenersSection = attrs.field(factory=lambda: ListenersSection.from_values(
        **_section_values(None, "listeners", "")))
    source: str = "<defaults>"

    @property
    def spool_directory(self) -> Path:
        return Path(self.spool.directory or Path(self.fep.data_dir) / "spool")

    @property
    def firmware_directory(self) -> Path:
        return Path(self.collect.firmware_dir or Path(self.fep.data_dir) / "firmware")

    @property
    def master_key_spec(self) -> str:
        """Where the secret store's master key is: ``[secrets] master_key`` or the default
        file under the data directory."""
        from fep.vault import master_key_spec

        return master_key_spec(self.secrets.master_key, self.fep.data_dir)

    @property
    def control_socket(self) -> Path:
        return Path(self.control.socket or Path(self.fep.data_dir) / "control.sock")


_SECTION_CLASSES: Mapping[str, Callable[..., Any]] = {
    "fep": FepSection,
    "store": StoreSection,
    "spool": SpoolSection,
    "collect": CollectSection,
    "push": PushSection,
    "dlms": DlmsSection,
    "log": LogSection,
    "modems": ModemsSection,
    "gprs": GprsSection,
    "control": ControlSection,
    "sms": SmsSection,
    "http": HttpSection,
    "manhole": ManholeSection,
    "alarms": AlarmsSection,
    "northbound": NorthboundSection,
    "secrets": SecretsSection,
    "listeners": ListenersSection.from_values,
}


def _section_values(
    parser: configparser.ConfigParser | None, section: str, file: str
) -> dict[str, Any]:
    options = SCHEMA[section]
    values = {key: option.default for key, option in options.items()}
    if parser is None or not parser.has_section(section):
        return values
    for key, raw in parser.items(section):
        option = options.get(key)
        if option is None:
            known = ", ".join(sorted(options))
            raise ConfigError(
                f"unknown key (known keys: {known})", file=file, section=section, key=key
            )
        try:
            values[key] = option.type(raw)
        except ValueError as e:
            expected = _TYPE_NAMES.get(option.type, "a valid value")
            raise ConfigError(
                f"expected {expected}, got {raw!r} ({e})", file=file, section=section, key=key
            ) from None
    return values


def parse_config(text: str, file: str = "<string>") -> Config:
    """Read and validate ini text; ``file`` names it in errors."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, source=file)
    except configparser.Error as e:
        raise ConfigError(f"not a valid ini file: {e}", file=file) from None
    for section in parser.sections():
        if section not in SCHEMA:
            known = ", ".join(SCHEMA)
            raise ConfigError(f"unknown section (known sections: {known})", file=file,
                              section=section)
    for section in REQUIRED_SECTIONS:
        if not parser.has_section(section):
            raise ConfigError("missing section", file=file, section=section)
    sections = {
        name: cls(**_section_values(parser, name, file)) for name, cls in _SECTION_CLASSES.items()
    }
    _check_gprs(sections["gprs"], file)
    return Config(source=file, **sections)


def _check_gprs(gprs: GprsSection, file: str) -> None:
    """The [gprs] values that only make sense together: rules, pattern, policy, heartbeats."""
    from fep.channels.gprs import gprs_settings

    try:
        gprs_settings(gprs)
    except ConfigError as e:
        raise ConfigError(e.message, file=file, section="gprs", key=e.key) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the ini file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    return parse_config(text, str(path))


def default_config() -> Config:
    """Every option at its default (for the command line without a config file)."""
    sections = {name: cls(**_section_values(None, name, "")) for name, cls in
                _SECTION_CLASSES.items()}
    return Config(**sections)
