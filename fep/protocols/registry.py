"""Meter protocols by name: the names used in routes, meter lists, config and the CLI.

``ProtocolRegistry`` is what the daemon's doors (the collection engine, the GPRS channel, the
console's and the API's reads) build protocols with: each protocol that needs the process's
shared state is built with its context (DLMS: the invocation counters, the client system
title and the security events, a ``fep.protocols.dlms.context.DlmsContext``), given to the
registry by fep.service, not kept in a module global. ``meter_protocol(name)`` is a protocol
without any context (the command line's checks; a DLMS meter with keys is refused by it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fep.errors import ConfigError
from fep.interfaces import IMeterProtocol

if TYPE_CHECKING:
    from fep.model import Meter

# name -> (module, class); imported on first use so the command line stays quick.
_PROTOCOLS: dict[str, tuple[str, str]] = {
    "ansi-c12": ("fep.protocols.ansi_c12.session", "C1218Protocol"),
    "ansi-c12.18": ("fep.protocols.ansi_c12.session", "C1218Protocol"),
    "ansi-c12.21": ("fep.protocols.ansi_c12.session", "C1221Protocol"),
    "dlms": ("fep.protocols.dlms.session", "DlmsProtocol"),
    "dlt645": ("fep.protocols.dlt645.session", "Dlt645Protocol"),
    "gw3761": ("fep.protocols.gw3761.session", "Gw3761Protocol"),
    "dlt698": ("fep.protocols.dlt698.session", "Dlt698Protocol"),
    "iec62056-21": ("fep.protocols.iec62056_21.session", "IecReadoutProtocol"),
    "modbus": ("fep.protocols.modbus.session", "PulseRecorderProtocol"),
    "modbus-pulse": ("fep.protocols.modbus.session", "PulseRecorderProtocol"),
}


def protocol_names() -> list[str]:
    return sorted(_PROTOCOLS)


def _protocol_class(name: str) -> Any:
    try:
        module_name, class_name = _PROTOCOLS[name]
    except KeyError:
        known = ", ".join(protocol_names())
        raise ConfigError(f"unknown protocol {name!r} (known: {known})") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ConfigError(f"protocol {name!r} is not available in this build") from None
    return getattr(module, class_name)


def protocol_commands(name: str) -> frozenset[str]:
    """The commands of the vocabulary (fep.collect.tasks.COMMANDS) that the protocol called
    ``name`` runs: its ``commands``, plus ``time-set`` and ``time-sync`` when it has a clock
    (fep.interfaces.IClock). ConfigError for an unknown protocol."""
    from fep.interfaces import IClock

    cls = _protocol_class(name)
    names = set(getattr(cls, "commands", ()))
    if IClock.implementedBy(cls):
        names |= {"time-set", "time-sync"}
    return frozenset(names)


def protocol_variant(meter: Any) -> tuple[str, frozenset[str]] | None:
    """The protocol variant of ``meter`` (a fep.model.Meter) when it runs fewer commands than
    its protocol (e.g. a DL/T 645-1997 meter): the variant's name and its commands, from the
    protocol class's ``variant(meter)``; None when the protocol has no such variants."""
    variant = getattr(_protocol_class(meter.protocol), "variant", None)
    found: tuple[str, frozenset[str]] | None = variant(meter) if variant is not None else None
    return found


def protocol_command_check(name: str) -> Callable[[Meter, str, Mapping[str, Any]], None] | None:
    """The protocol's ``check_command(meter, command, params)``, a static method raising
    ConfigError for parameters the meter cannot take (a Modbus device map's parameters),
    run when a command is requested; None when the protocol has none."""
    check = getattr(_protocol_class(name), "check_command", None)
    return check if callable(check) else None


def meter_protocol(name: str) -> IMeterProtocol:
    """The protocol called ``name`` with no shared context; ConfigError lists the known
    names otherwise."""
    protocol: IMeterProtocol = _protocol_class(name)()
    return protocol


class ProtocolRegistry:
    """The meter protocols of one process: ``protocol_for(name)`` builds the protocol called
    ``name``, with the context given for it (``contexts``: protocol name -> the object its
    class takes, e.g. ``{"dlms": DlmsContext(...)}``)."""

    def __init__(self, contexts: Mapping[str, object] | None = None) -> None:
        self.contexts = dict(contexts or {})
        for name in self.contexts:
            if name not in _PROTOCOLS:
                raise ConfigError(f"unknown protocol {name!r} (known: "
                                  f"{', '.join(protocol_names())})")

    def protocol_for(self, name: str) -> IMeterProtocol:
        cls = _protocol_class(name)
        context = self.contexts.get(name)
        protocol: IMeterProtocol = cls(context) if context is not None else cls()
        return protocol

    def context(self, name: str) -> Any:
        """The context protocols called ``name`` are built with (None: none)."""
        return self.contexts.get(name)


def protocol_provides(name: str, interface: Any) -> bool:
    """Whether the protocol called ``name`` implements ``interface`` (a capability of
    fep.interfaces); False for an unknown protocol."""
    try:
        cls = _protocol_class(name)
    except ConfigError:
        return False
    return bool(interface.implementedBy(cls))
