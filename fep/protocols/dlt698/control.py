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
``parameter-set``   SET of the attributes named ``OAD=TYPE:VALUE`` (no method), each read
                    back after it

After ``disconnect`` and ``reconnect`` the first relay's OAD is read back (directly: a GET
after the ACTION; through a terminal: PROXY ActionThenGet) and its current state, the
second element of the relay output's structure (0 not output, 1 output), is the outcome's
``relay``: ``closed`` or ``open``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fep.errors import ConfigError
from fep.protocols.dlt698.apdu import ResultNormal, dar_text
from fep.protocols.dlt698.data import OAD, OMD, Data, DataType, integer

REMOTE_CONTROL: Final = 0x8000
DEVICE: Final = 0x4300
TRIP: Final = OMD(REMOTE_CONTROL, 129)
CLOSE: Final = OMD(REMOTE_CONTROL, 130)
EVENT_INIT: Final = OMD(DEVICE, 5)
DEMAND_INIT: Final = OMD(DEVICE, 6)
DEFAULT_RELAY: Final = OAD(0xF205, 2, 1)
COMMANDS: Final = frozenset({"disconnect", "reconnect", "demand-reset", "event-log-clear",
                             "parameter-set"})
# parameter-set OAD=TYPE:VALUE: the types a value can be given as.
SET_TYPES: Final = {
    "bool": DataType.BOOL,
    "integer": DataType.INTEGER,
    "long": DataType.LONG,
    "double-long": DataType.DOUBLE_LONG,
    "unsigned": DataType.UNSIGNED,
    "long-unsigned": DataType.LONG_UNSIGNED,
    "double-long-unsigned": DataType.DOUBLE_LONG_UNSIGNED,
    "enum": DataType.ENUM,
    "visible-string": DataType.VISIBLE_STRING,
    "octet-string": DataType.OCTET_STRING,
}
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


RELAY_COMMANDS: Final = frozenset({"disconnect", "reconnect"})


def relay_oads(relay: str | None) -> tuple[OAD, ...]:
    """The relay output OADs of a meter's ``dlt698_relay`` (default F2050201)."""
    return _relays(relay)


def relay_state(result: ResultNormal) -> str:
    """``closed``/``open`` from a relay output read back (its structure's current state:
    0 not output, 1 output), or what was read instead."""
    if result.data is None:
        return f"unknown ({dar_text(result.dar) if result.dar is not None else 'no value'})"
    value = result.data
    items = value.items if value.tag in (DataType.ARRAY, DataType.STRUCTURE) else ()
    if value.tag is DataType.ARRAY and len(items) == 1:
        value = items[0]
        items = value.items if value.tag is DataType.STRUCTURE else ()
    if len(items) >= 2 and items[1].tag is DataType.ENUM and items[1].value in (0, 1):
        return "open" if items[1].value == 1 else "closed"
    return f"unknown ({value.tag.name.lower()} value)"


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


def parameter_values(params: Mapping[str, Any]) -> tuple[tuple[OAD, Data], ...]:
    """The attributes ``parameter-set`` writes: each parameter named by its OAD (8 hex
    digits) with ``TYPE:VALUE`` (a type of SET_TYPES; octet-string in hex, bool yes/no);
    other parameters (the engine's own) are not values. ConfigError names a bad one."""
    out = []
    for key, raw in params.items():
        try:
            oad = OAD.parse(str(key))
        except ValueError:
            continue
        text = str(raw).strip()
        kind, sep, value = text.partition(":")
        tag = SET_TYPES.get(kind.strip().lower())
        if not sep or tag is None:
            raise ConfigError(f"{key} is TYPE:VALUE with a TYPE of {', '.join(SET_TYPES)}, "
                              f"not {text!r}", key=str(key))
        try:
            if tag is DataType.BOOL:
                if value.strip().lower() not in _YES + _NO:
                    raise ValueError(value)
                data = Data(tag, value.strip().lower() in _YES)
            elif tag is DataType.VISIBLE_STRING:
                data = Data(tag, value)
            elif tag is DataType.OCTET_STRING:
                data = Data(tag, bytes.fromhex(value))
            else:
                data = integer(tag, int(value, 0))
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}: {value!r} is no {kind.strip().lower()} value",
                              key=str(key)) from None
        out.append((oad, data))
    if not out:
        raise ConfigError("parameter-set names the attributes it writes as OAD=TYPE:VALUE "
                          "(40010200=octet-string:000000123456)", key="parameter-set")
    return tuple(out)


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
    if command == "parameter-set":
        return ()  # no method: SET (parameter_values)
    raise NotImplementedError(command)


__all__ = ["CLOSE", "COMMANDS", "DEFAULT_RELAY", "DEMAND_INIT", "EVENT_INIT", "RELAY_COMMANDS",
           "SET_TYPES", "TRIP", "command_methods", "parameter_values", "relay_oads",
           "relay_state"]
