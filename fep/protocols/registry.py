"""Meter protocols by name: the names used in routes, meter lists, config and the CLI."""

from __future__ import annotations

import importlib

from fep.errors import ConfigError
from fep.interfaces import IMeterProtocol

# name -> (module, class); imported on first use so the command line stays quick.
_PROTOCOLS: dict[str, tuple[str, str]] = {
    "ansi-c12": ("fep.protocols.ansi_c12.session", "C1218Protocol"),
    "ansi-c12.18": ("fep.protocols.ansi_c12.session", "C1218Protocol"),
    "ansi-c12.21": ("fep.protocols.ansi_c12.session", "C1221Protocol"),
    "dlms": ("fep.protocols.dlms.session", "DlmsProtocol"),
    "dlt645": ("fep.protocols.dlt645.session", "Dlt645Protocol"),
    "iec62056-21": ("fep.protocols.iec62056_21.session", "IecReadoutProtocol"),
    "modbus": ("fep.protocols.modbus.session", "PulseRecorderProtocol"),
    "modbus-pulse": ("fep.protocols.modbus.session", "PulseRecorderProtocol"),
}


def protocol_names() -> list[str]:
    return sorted(_PROTOCOLS)


def meter_protocol(name: str) -> IMeterProtocol:
    """The protocol called ``name``; ConfigError lists the known names otherwise."""
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
    protocol: IMeterProtocol = getattr(module, class_name)()
    return protocol
