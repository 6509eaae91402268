"""The per-read options an operator may pass to a meter read (the API's ``POST
meters/{id}/read`` body ``options``, the console's ``read("m1", key=value)``): a whitelist
per protocol of what to read and from when, never how to reach or authenticate the meter.

Addresses, links, passwords, keys, ``dlms_ciphered`` and the like come from the meter list
only: a caller who could set them could read another meter under this one's name, or ask for
an unciphered association with a keyed meter. A value is checked for its kind (a list of
items, an ISO time, a bounded number, yes/no, a device map's name); a device map is named,
never given as a file path, and must be one of the maps fep finds (``etc/devices``).
``fep read`` on the command line is not bound by this: whoever runs it has the files anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

from fep.errors import ConfigError, FepError
from fep.model import ObisCode

MAX_VALUE_LENGTH: Final = 4096
MAX_ITEMS: Final = 256

Check = Callable[[str], str]


class ReadOptionRefused(FepError):
    """An option a read may not take, or a value it may not have; names the option."""

    def __init__(self, option: str, why: str) -> None:
        self.option = option
        self.why = why
        super().__init__(f"option {option}: {why}")


def _items(pattern: str, what: str) -> Check:
    item = re.compile(pattern)

    def check(value: str) -> str:
        items = [t.strip() for t in value.split(",") if t.strip()]
        if not items:
            raise ValueError(f"expected a comma list of {what}")
        if len(items) > MAX_ITEMS:
            raise ValueError(f"{len(items)} items; at most {MAX_ITEMS}")
        for text in items:
            if not item.fullmatch(text):
                raise ValueError(f"{text!r} is not {what}")
        return ",".join(items)

    return check


def _obis(value: str) -> str:
    try:
        ObisCode.parse(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an OBIS code") from None
    return value.strip()


def _obis_list(value: str) -> str:
    items = [t.strip() for t in value.split(",") if t.strip()]
    if not items or len(items) > MAX_ITEMS:
        raise ValueError(f"expected a comma list of 1..{MAX_ITEMS} OBIS codes")
    return ",".join(_obis(t) for t in items)


def _time(value: str) -> str:
    try:
        datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 time") from None
    return value.strip()


def _whole(lo: int, hi: int) -> Check:
    def check(value: str) -> str:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not lo <= number <= hi:
            raise ValueError(f"{number} is outside {lo}..{hi}")
        return str(number)

    return check


def _yes_no(value: str) -> str:
    text = value.strip().lower()
    if text not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
        raise ValueError(f"{value!r} is not yes or no")
    return text


_MAP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _device_map(value: str) -> str:
    """A device map by name (``sim-pr2``), found among the maps fep ships or the site's
    ``etc/devices``; anything path-like is refused before any file is looked at."""
    name = value.strip()
    if not _MAP_NAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a device map name (a path or a file name is "
                         "refused: name one of the maps in etc/devices, e.g. sim-pr2)")
    from fep.protocols.modbus.devicemap import find_device_map

    try:
        find_device_map(name)
    except ConfigError:
        raise ValueError(f"no device map named {name!r} in etc/devices") from None
    return name


_DLMS: Final[Mapping[str, Check]] = {
    "dlms_objects": _items(r"\d{1,5}/[0-9A-Za-z.:*-]{1,40}/\d{1,3}",
                           "CLASS/OBIS/ATTRIBUTE objects"),
    "dlms_profile": _obis,
    "dlms_from": _time,
    "dlms_to": _time,
    "dlms_event_logs": _obis_list,
}
_DLT645: Final[Mapping[str, Check]] = {
    "dlt645_items": _items(r"[0-9A-Fa-f]{4}(?:[0-9A-Fa-f]{4})?", "data identifiers in hex"),
    "dlt645_profile_since": _time,
    "dlt645_profile_blocks": _whole(1, 96),
}
_DLT698_OADS = _items(r"[0-9A-Fa-f]{8}", "OADs (8 hex digits)")
_DLT698: Final[Mapping[str, Check]] = {
    "dlt698_items": _DLT698_OADS,
    "dlt698_frozen": _DLT698_OADS,
    "dlt698_frozen_columns": _DLT698_OADS,
    "dlt698_frozen_last": _whole(1, 96),
    "dlt698_events": _DLT698_OADS,
    "dlt698_events_last": _whole(1, 96),
    "dlt698_proxy": _items(r"[0-9]{2,32}", "meter addresses (decimal digits)"),
}
_C12: Final[Mapping[str, Check]] = {"c12_profile": _yes_no, "c12_events": _yes_no,
                                   "c12_snapshots": _yes_no}
_GW3761: Final[Mapping[str, Check]] = {
    "gw3761_points": _items(r"[Pp]?\d{1,4}", "measuring point numbers"),
    "gw3761_items": _items(r"(?:0[xX])?[0-9A-Fa-f]{1,2}:[Ff]?\d{1,3}", "AFN:Fn classes"),
    "gw3761_day": _time,
    "gw3761_from": _time,
    "gw3761_to": _time,
    "gw3761_density": _whole(1, 255),
}
_MODBUS: Final[Mapping[str, Check]] = {
    "modbus_device_map": _device_map,
    "pulse_since": _time,
    "pulse_since_index": _whole(0, 0xFFFFFFFF),
    "pulse_history": _whole(0, 100_000),
    "pulse_events": _whole(0, 10_000),
}

# protocol (as in the meter list) -> option -> its check
READ_OPTIONS: Final[Mapping[str, Mapping[str, Check]]] = {
    "dlms": _DLMS,
    "dlt645": _DLT645,
    "gw3761": _GW3761,
    "dlt698": _DLT698,
    "ansi-c12": _C12,
    "ansi-c12.18": _C12,
    "ansi-c12.21": _C12,
    "iec62056-21": {},
    "modbus": _MODBUS,
    "modbus-pulse": _MODBUS,
}


def allowed_options(protocol: str) -> tuple[str, ...]:
    return tuple(sorted(READ_OPTIONS.get(protocol, {})))


def checked(protocol: str, options: Mapping[str, object]) -> dict[str, str]:
    """The options as meter metadata for one read, each checked; ReadOptionRefused names
    the first option that is not allowed for ``protocol`` or whose value is not right."""
    allowed = READ_OPTIONS.get(protocol, {})
    out: dict[str, str] = {}
    for key, raw in options.items():
        name = str(key)
        check = allowed.get(name)
        if check is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise ReadOptionRefused(name[:64], f"not a read option of protocol {protocol} "
                                    f"(allowed: {known})")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ReadOptionRefused(name, "expected text or a whole number")
        value = str(raw)
        if len(value) > MAX_VALUE_LENGTH:
            raise ReadOptionRefused(name, f"longer than {MAX_VALUE_LENGTH} characters")
        if any(ord(c) < 0x20 or c == "\x7f" for c in value):
            raise ReadOptionRefused(name, "control characters are not allowed")
        try:
            out[name] = check(value)
        except ValueError as e:
            raise ReadOptionRefused(name, str(e)) from None
    return out
