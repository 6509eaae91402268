"""The channels' settings, typed: ``[gprs]`` (modems that dial in), ``[push]`` (the push
listeners) and ``[listeners]`` (every listener's limits), declared with their options
(fep.options). ``gprs_settings`` (gprs.py) and ``limits_for`` (listeners.py) turn them into
what the channel runs with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from fep.channels.gprs import gprs_settings, listener_names, parse_heartbeats
from fep.channels.identify import DEFAULT_REGISTRATION
from fep.channels.listeners import BUILTIN_OVERRIDES, LIMIT_KEYS, LISTENERS, ListenerLimits
from fep.channels.modem_identity import SourceNetworks, parse_source_networks
from fep.options import (
    Option,
    Section,
    expects,
    non_negative_float,
    non_negative_int,
    optional,
    positive_float,
    positive_int,
    text,
    words,
    yes_no,
)


@expects("Twisted server endpoints separated by spaces")
def endpoints(value: str) -> tuple[str, ...]:
    """Listener endpoint strings separated by spaces or commas."""
    return tuple(listener_names(value))


@expects("text")
def lower_text(value: str) -> str:
    return value.strip().lower()


@attrs.frozen
class GprsSection:
    listen: tuple[str, ...]
    identify: tuple[str, ...]
    registration: str
    unknown: str
    register_protocol: str
    identify_timeout: float
    idle_timeout: float
    heartbeat: tuple[bytes, ...]
    max_garbage: int
    connect_backoff: float
    connect_backoff_max: float
    conflict: str
    heartbeat_window: float
    conflict_quarantine: float
    allow: SourceNetworks
    tls_client_ca: str
    terminal_profiles: tuple[str, ...] = ()


def _gprs(**values: Any) -> GprsSection:
    section = GprsSection(**values)
    # The values that only make sense together: rules, pattern, policies, protocol.
    gprs_settings(section)
    return section


GPRS = Section("gprs", {
    "listen": Option(
        endpoints,
        "",
        "listeners (Twisted server endpoints, separated by spaces) where GPRS modems "
        "dial in, e.g. tcp:4070 ssl:4071:privateKey=key.pem:certKey=cert.pem; empty: none",
    ),
    "identify": Option(
        words,
        "ascii binary dlms iec62056-21 gw3761 dlt698",
        "identification rules tried on a new connection's first bytes",
    ),
    "registration": Option(
        text,
        DEFAULT_REGISTRATION,
        "regular expression of the ASCII registration line (groups imei, iccid, imsi, "
        "serial)",
    ),
    "unknown": Option(lower_text, "quarantine",
                      "unknown modems: register, quarantine or reject"),
    "register_protocol": Option(
        text, "dlms", "protocol of a meter registered from an ASCII or binary registration"
    ),
    "identify_timeout": Option(
        positive_float, 60.0, "seconds a new connection has to identify itself"
    ),
    "idle_timeout": Option(
        positive_float, 300.0, "seconds of silence after which a session is closed"
    ),
    "heartbeat": Option(
        expects("heartbeat packets (hex:A5FE or ASCII)")(parse_heartbeats), "",
        "heartbeat packets dropped from the stream (hex:A5FE or ASCII)"
    ),
    "max_garbage": Option(
        positive_int, 4096, "bytes without a registration before a connection is closed"
    ),
    "connect_backoff": Option(
        positive_float, 10.0, "seconds a line is not dialled again after a failed connect"
    ),
    "connect_backoff_max": Option(
        positive_float, 600.0, "most seconds of backoff after failed connects in a row"
    ),
    "conflict": Option(
        lower_text, "keep", "a modem claiming a name a live session holds: keep (the "
        "incumbent) or replace-when-silent"
    ),
    "heartbeat_window": Option(
        positive_float, 120.0, "seconds of silence after which a session no longer "
        "counts as answering (replace-when-silent)"
    ),
    "conflict_quarantine": Option(
        positive_float, 30.0, "seconds a contested newcomer is held before it is closed"
    ),
    "allow": Option(
        expects("source networks (CIDR)")(parse_source_networks), "",
        "source networks (CIDR) modems may connect from; LISTENER=CIDR for one listener; "
        "empty: any"
    ),
    "tls_client_ca": Option(
        text, "", "CA certificates (PEM) that sign the modems' client certificates: every "
        "ssl: listener then requires one naming the modem; empty: none asked"
    ),
    "terminal_profiles": Option(
        words, "", "directories of GPRS terminal profiles (NAME.ini, docs/channels/"
        "terminals.md), read after the shipped etc/terminals; a profile of the same name "
        "replaces a shipped one"
    ),
}, _gprs)


@attrs.frozen
class PushSection:
    iec62056_21: str
    dlms: str
    accept_unknown: bool
    dlms_plain: tuple[str, ...] = ()


@expects("address, ldn and/or serial, separated by spaces or commas")
def plain_ways(text: str) -> tuple[str, ...]:
    ways = words(text)
    for way in ways:
        if way not in ("address", "ldn", "serial"):
            raise ValueError(f"{way!r} is not address, ldn or serial")
    return ways


PUSH = Section("push", {
    "iec62056_21": Option(
        text,
        "",
        "listener (Twisted endpoint) for meters that connect and send an IEC 62056-21 "
        "readout, e.g. tcp:4060:interface=127.0.0.1; empty disables it",
    ),
    "dlms": Option(
        text,
        "",
        "listener (Twisted endpoint) for DLMS Data-Notifications over the wrapper, e.g. "
        "tcp:4059:interface=0.0.0.0; empty disables it",
    ),
    "accept_unknown": Option(
        yes_no, False, "store readouts from meters that are not in the meter list"
    ),
    "dlms_plain": Option(
        plain_ways, "", "how the DLMS push listener may identify a meter without keys "
        "that pushes unciphered: address (HDLC address or wrapper wPort, the meter list's "
        "dlms_push_address), ldn (logical device name), serial (serial number in the list); "
        "empty: unciphered pushes are refused"
    ),
}, PushSection)


@attrs.frozen
class ListenersSection:
    """[listeners]: limits every listener has unless it overrides them (``limits_for``)."""

    max_connections: int
    max_per_source: int
    idle_timeout: float
    max_unidentified_bytes: int
    # listener name -> limit -> value, for the NAME.KEY options that are set.
    overrides: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @classmethod
    def from_values(cls, **values: Any) -> ListenersSection:
        general = {key: values.pop(key) for key in LIMIT_KEYS}
        overrides: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if value is not None:
                name, _, limit = key.partition(".")
                overrides.setdefault(name, {})[limit] = value
        return cls(overrides=overrides, **general)


def _listener_options() -> dict[str, Option]:
    """[listeners]: the limits of every listener, then NAME.KEY overrides per listener."""
    limits = ListenerLimits()
    docs = {
        "max_connections": "connections a listener holds open at once (0: no cap)",
        "max_per_source": "connections open at once from one source address (0: no cap)",
        "idle_timeout": "seconds without a byte from the peer before closing (0: never)",
        "max_unidentified_bytes": "bytes a peer may send before it is identified (0: no cap)",
    }
    options = {
        key: Option(non_negative_float if key == "idle_timeout" else non_negative_int,
                    getattr(limits, key), doc)
        for key, doc in docs.items()
    }
    for name in LISTENERS:
        for key, doc in docs.items():
            kind = optional(non_negative_float if key == "idle_timeout" else non_negative_int)
            default = BUILTIN_OVERRIDES.get(name, {}).get(key, "")
            options[f"{name}.{key}"] = Option(kind, default, f"{name}: {doc}; empty: "
                                              f"[listeners] {key}")
    return options


LISTENER_LIMITS = Section("listeners", _listener_options(), ListenersSection.from_values)
