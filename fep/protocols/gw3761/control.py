"""Commands to a concentrator itself, sans-IO: resets (AFN 01), parameter reads (AFN 0A) and
writes (AFN 04) of a documented handful of Fn, as steps one request at a time.

``terminal-reset`` (``kind=hardware|data|parameters``: AFN 01 F1, F2, F3), ``parameter-read``
(``fn=F1,F3``: AFN 0A) and ``parameter-set`` (``NAME=VALUE`` of F1 or F3: the Fn is read
first, the values given are changed in it, it is written whole with AFN 04 and read back;
a value read back that differs fails the command). Parameters:

- F1, upstream communication port: ``rts`` (20 ms units), ``delay`` (minutes the terminal
  may take to send as initiator), ``timeout`` (seconds it waits for the master's answer,
  0..4095), ``retries`` (0..3), ``confirm`` (flags of services to be confirmed, 0..7),
  ``heartbeat`` (minutes, 0..255);
- F3, master stations: ``host``, ``port``, ``host2``, ``port2`` (IPv4 and port), ``apn``
  (up to 16 ASCII characters).

``Exchange.start()``, ``receive(bytes)`` and ``timeout()`` give actions: ``Send``,
``Finished(values)``, ``Failed(error)``, ``Noise(why)``. No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from fep.errors import ConfigError
from fep.protocols.gw3761.exchange import Failed, MasterExchange, Noise, Send, Step
from fep.protocols.gw3761.frames import Address, Afn, Frame
from fep.protocols.gw3761.services import (
    Confirmed,
    Data,
    Denied,
    MasterStations,
    UplinkParameters,
    encode_unit,
)

RESET = "terminal-reset"
READ = "parameter-read"
WRITE = "parameter-set"
COMMANDS = frozenset({RESET, READ, WRITE})

# terminal-reset kinds -> AFN 01 Fn (F3: parameters and all data, the factory settings).
RESET_KINDS: Mapping[str, int] = {"hardware": 1, "data": 2, "parameters": 3}

# parameter name -> (Fn, field, range or None for text)
_INT = tuple[int, int]
PARAMETERS: Mapping[str, tuple[int, str, _INT | None]] = {
    "rts": (1, "rts", (0, 255)),
    "delay": (1, "delay", (0, 255)),
    "timeout": (1, "timeout", (0, 4095)),
    "retries": (1, "retries", (0, 3)),
    "confirm": (1, "confirm", (0, 7)),
    "heartbeat": (1, "heartbeat", (0, 255)),
    "host": (3, "host", None),
    "port": (3, "port", (0, 65535)),
    "host2": (3, "host2", None),
    "port2": (3, "port2", (0, 65535)),
    "apn": (3, "apn", None),
}
FNS = (1, 3)
_TYPES: Mapping[int, type] = {1: UplinkParameters, 3: MasterStations}
# Parameters of the engine's commands that are not the device's (attempts, progress, ...).
_ENGINE_KEYS = frozenset({"attempts", "retry_delay", "progress", "timeout_s"})


def _host(value: str, name: str) -> str:
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        raise ConfigError(f"{name}={value!r} is not an IPv4 address (a.b.c.d)", key=name)
    return ".".join(str(int(p)) for p in parts)


def parse_changes(params: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """A parameter-set's values by Fn ({1: {"heartbeat": 5}, 3: {...}}); ConfigError naming
    the parameter that is unknown or out of range, or when nothing is set."""
    changes: dict[int, dict[str, Any]] = {}
    for name, raw in params.items():
        if name in _ENGINE_KEYS:
            continue
        if name not in PARAMETERS:
            raise ConfigError(f"parameter-set: unknown gw3761 parameter {name!r} (known: "
                              f"{', '.join(PARAMETERS)})", key=name)  # fmt: skip
        fn, field, bounds = PARAMETERS[name]
        text = str(raw).strip()
        value: Any
        if bounds is None:
            if name == "apn":
                if len(text.encode("ascii", errors="replace")) > 16 or not text.isascii():
                    raise ConfigError(f"apn={text!r}: up to 16 ASCII characters", key=name)
                value = text
            else:
                value = _host(text, name)
        else:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{name}={text!r} is not a whole number", key=name) from None
            if not bounds[0] <= value <= bounds[1]:
                raise ConfigError(f"{name}={value} is not {bounds[0]}..{bounds[1]}", key=name)
        changes.setdefault(fn, {})[field] = value
    if not changes:
        raise ConfigError("parameter-set sets nothing: give one or more of "
                          f"{', '.join(PARAMETERS)}", key="params")  # fmt: skip
    return changes


def parse_fns(params: Mapping[str, Any]) -> tuple[int, ...]:
    """The Fn a parameter-read asks (``fn=F1,F3``; both when not given)."""
    text = str(params.get("fn", "") or "").strip()
    if not text:
        return FNS
    fns = []
    for part in text.replace(";", ",").split(","):
        part = part.strip().upper().removeprefix("F")
        if not part.isdigit() or int(part) not in FNS:
            raise ConfigError(f"parameter-read fn={text!r}: F1 and/or F3", key="fn")
        fns.append(int(part))
    return tuple(sorted(set(fns)))


def reset_fn(params: Mapping[str, Any]) -> int:
    kind = str(params.get("kind", "") or "").strip().lower()
    if kind not in RESET_KINDS:
        raise ConfigError(f"terminal-reset kind={kind!r}: one of {', '.join(RESET_KINDS)}",
                          key="kind")  # fmt: skip
    return RESET_KINDS[kind]


def check(command: str, params: Mapping[str, Any]) -> None:
    """ConfigError for a concentrator command's wrong parameters (when it is asked)."""
    if command == RESET:
        reset_fn(params)
    elif command == READ:
        parse_fns(params)
    elif command == WRITE:
        parse_changes(params)


def flat(values: Mapping[int, Any]) -> dict[str, Any]:
    """Read Fn values as ``F1.heartbeat`` = 15, ... (JSON-able)."""
    out: dict[str, Any] = {}
    for fn in sorted(values):
        value = values[fn]
        if attrs.has(type(value)):
            for k, v in attrs.asdict(value).items():
                out[f"F{fn}.{k}"] = v
    return out


@attrs.frozen
class Finished:
    values: Mapping[int, Any]


Action = Send | Finished | Failed | Noise


def reset_steps(params: Mapping[str, Any]) -> list[Step]:
    fn = reset_fn(params)
    return [Step(f"01:F{fn} reset", int(Afn.RESET), encode_unit(Afn.RESET, [0], [fn], False))]


def read_steps(fns: Sequence[int]) -> list[Step]:
    return [Step(f"0A:F{fn}", int(Afn.QUERY_PARAMETERS),
                 encode_unit(Afn.QUERY_PARAMETERS, [0], [fn], False)) for fn in fns]  # fmt: skip


def write_steps(changes: Mapping[int, Mapping[str, Any]]
                ) -> Callable[[Mapping[int, Any]], list[Step]]:  # fmt: skip
    """After the reads: each Fn as read with the changes made, written (AFN 04), read back."""

    def then(values: Mapping[int, Any]) -> list[Step]:
        steps = []
        for fn, change in sorted(changes.items()):
            current = values.get(fn)
            base: Any = current if isinstance(current, _TYPES[fn]) else _TYPES[fn]()
            wanted = attrs.evolve(base, **change)
            steps.append(Step(f"04:F{fn}", int(Afn.SET_PARAMETERS),
                              encode_unit(Afn.SET_PARAMETERS, [0], [fn], False,
                                          {(0, fn): wanted})))  # fmt: skip
        return steps + read_steps(sorted(changes))

    return then


class Exchange(MasterExchange):
    """Runs ``steps`` one request at a time, then the steps ``then`` makes of the values
    read (AFN 0A answers, by Fn). A denial or a request left unanswered after ``retries``
    resends fails it, naming the concentrator and the step."""

    def __init__(self, address: Address, steps: Sequence[Step], *,
                 then: Callable[[Mapping[int, Any]], list[Step]] | None = None,
                 retries: int = 1, meter: str | None = None,
                 route: str | None = None) -> None:  # fmt: skip
        super().__init__(address, retries=retries, meter=meter, route=route)
        self.values: dict[int, Any] = {}
        self._queue = list(steps)
        self._then = then

    def start(self) -> list[Action]:
        return self._next()

    def _next(self) -> list[Action]:
        if not self._queue and self._then is not None:
            then, self._then = self._then, None
            self._queue = then(dict(self.values))
        if not self._queue:
            self._done = True
            self._current = None
            return [Finished(dict(self.values))]
        return self._ask(self._queue.pop(0))

    def _answered(self, whole: Frame) -> list[Action]:
        assert self._current is not None
        what = self._current.what
        event = self._event(whole)
        if isinstance(event, Failed):
            return [event]
        if isinstance(event, Denied):
            return [self._failed(f"denied {what} (AFN 00 F2)")]
        if isinstance(event, Data) and event.afn == Afn.QUERY_PARAMETERS == self._current.afn:
            for item in event.items:
                self.values[item.fn] = item.value
        elif not isinstance(event, Confirmed) or self._current.afn == Afn.QUERY_PARAMETERS:
            return self._dropped(f"AFN {whole.afn:02X} answer to {what} dropped")
        return self._next()


__all__ = [
    "COMMANDS",
    "PARAMETERS",
    "RESET_KINDS",
    "Exchange",
    "Failed",
    "Finished",
    "Noise",
    "Send",
    "Step",
    "check",
    "flat",
    "parse_changes",
    "parse_fns",
    "read_steps",
    "reset_steps",
    "write_steps",
]
