"""The control vocabulary in DL/T 698.45 (sans-IO): each command fep runs as the ACTION
methods it sends (docs/control.md, "DL/T 698.45").

``disconnect``      remote control (8000) method 129, trip: per relay (OAD, default
                    ``F2050201``, the first relay output) the alarm delay (``delay=``
                    minutes, default 0), the power-limit time (``limit=`` minutes, 0: until
                    closed again, the default) and automatic close (``auto=yes``, default no)
``reconnect``       8000 method 130, close: per relay the command, close allowed (0, the
                    default: the customer closes with the meter's button) or direct close
                    (``mode=direct``, 1)
``demand-reset``    electrical device (4300) method 6, demand initialisation
``event-log-clear`` 4300 method 5, event initialisation
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fep.errors import ConfigError
from fep.protocols.dlt698.data import OAD, OMD, Data, DataType, integer

REMOTE_CONTROL: Final = 0x8000
DEVICE: Final = 0x4300
TRIP: Final = OMD(REMOTE_CONTROL, 129)
CLOSE: Final = OMD(REMOTE_CONTROL, 130)
EVENT_INIT: Final = OMD(DEVICE, 5)
DEMAND_INIT: Final = OMD(DEVICE, 6)
DEFAULT_RELAY: Final = OAD(0xF205, 2, 1)
COMMANDS: Final = frozenset({"disconnect", "reconnect", "demand-reset", "event-log-clear"})
_YES = ("yes", "y", "true", "1", "on")
_NO = ("no", "n", "false", "0", "off")


def _number(params: Mapping[str, Any], key: str, limit: int, default: int = 0) -> int:
    text = str(params.get(key, default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= limit:
        raise ConfigError(f"{key} is a whole number of minutes 0..{limit}, not {text!r}",
                          key=key)
    return value


def _relays(relay: str | None) -> tuple[OAD, ...]:
    out = []
    for text in (relay or "").replace(";", ",").split(","):
        if text.strip():
            try:
                out.append(OAD.parse(text))
            except ValueError:
                raise ConfigError(f"dlt698_relay has {text.strip()!r}, not an OAD of 8 hex "
                                  "digits", key="dlt698_relay") from None
    return tuple(out) or (DEFAULT_RELAY,)


def command_methods(command: str, params: Mapping[str, Any], relay: str | None = None
                    ) -> tuple[tuple[OMD, Data], ...]:  # fmt: skip
    """The ACTION methods and parameters of ``command`` (``relay``: the meter's
    ``dlt698_relay``, comma list of relay output OADs); ConfigError names a bad
    parameter, NotImplementedError a command DL/T 698.45 has no method for here."""
    if command == "disconnect":
        delay = _number(params, "delay", 0xFF)
        limit = _number(params, "limit", 0xFFFF)
        auto = str(params.get("auto", "no")).strip().lower()
        if auto not in _YES + _NO:
            raise ConfigError(f"auto is yes or no, not {auto!r}", key="auto")
        items = [Data.structure((Data(DataType.OAD, r), integer(DataType.UNSIGNED, delay),
                                 integer(DataType.LONG_UNSIGNED, limit),
                                 Data(DataType.BOOL, auto in _YES)))
                 for r in _relays(relay)]  # fmt: skip
        return ((TRIP, Data.array(items)),)
    if command == "reconnect":
        mode = str(params.get("mode", "allowed")).strip().lower()
        if mode not in ("allowed", "direct"):
            raise ConfigError(f"mode is allowed or direct, not {mode!r}", key="mode")
        code = 1 if mode == "direct" else 0
        items = [Data.structure((Data(DataType.OAD, r), integer(DataType.ENUM, code)))
                 for r in _relays(relay)]
        return ((CLOSE, Data.array(items)),)
    if command == "demand-reset":
        return ((DEMAND_INIT, Data.null()),)
    if command == "event-log-clear":
        return ((EVENT_INIT, Data.null()),)
    raise NotImplementedError(command)


__all__ = ["CLOSE", "COMMANDS", "DEFAULT_RELAY", "DEMAND_INIT", "EVENT_INIT", "TRIP",
           "command_methods"]
