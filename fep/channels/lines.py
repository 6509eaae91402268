"""Line discipline of a serial line, sans-IO: its settings (speed, character frame, flow
control), RS-485 half-duplex echo suppression and the inter-frame gap (the silence fep
leaves on the line before it transmits).

Times are seconds from whatever clock the caller uses (the reactor's); nothing here reads a
clock or does I/O. The serial and RFC 2217 transports drive it.
"""

from __future__ import annotations

import math

import attrs

# How long after a transmission has left the wire its echo may still arrive (adapter and
# driver latency; a USB RS-485 adapter returns the echo a few milliseconds late).
ECHO_WINDOW = 0.5
# Waits shorter than this are none (clock arithmetic in floats).
_EPSILON = 1e-6

PARITIES = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)
# Longest inter-frame gap a route may ask for (seconds): more is a typo (ms for s).
MAX_GAP = 10.0


@attrs.frozen
class LineSettings:
    """How a serial line is set (IEC 62056-21 starts at 300 Bd 7E1), whether the port is
    local (``serial:`` routes) or on a serial server (``rfc2217:`` routes). Keyword-only,
    so that each kind of route puts its own address first."""

    baudrate: int = attrs.field(default=300, kw_only=True)
    bytesize: int = attrs.field(default=7, kw_only=True)
    parity: str = attrs.field(default="E", kw_only=True)
    stopbits: float = attrs.field(default=1, kw_only=True)
    xonxoff: bool = attrs.field(default=False, kw_only=True)
    rtscts: bool = attrs.field(default=False, kw_only=True)
    echo: bool = attrs.field(default=False, kw_only=True)
    gap: float = attrs.field(default=0.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        """ValueError naming the option when a line setting is out of range."""
        if self.baudrate <= 0:
            raise ValueError(f"option baudrate: bad value {self.baudrate}")
        if self.bytesize not in BYTESIZES:
            raise ValueError(f"option bytesize: bad value {self.bytesize} (5..8)")
        if self.parity not in PARITIES:
            raise ValueError(f"option parity: bad value {self.parity!r} (N, E, O, M, S)")
        if self.stopbits not in STOPBITS:
            raise ValueError(f"option stopbits: bad value {self.stopbits} (1, 1.5, 2)")
        if not (0 <= self.gap <= MAX_GAP) or math.isnan(self.gap):
            raise ValueError(f"option gap: {self.gap} s is not 0..{MAX_GAP:g} seconds")

    @property
    def char_bits(self) -> float:
        """Bits one character takes on the wire: start + data + parity + stop."""
        return float(1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits)


class EchoSuppressor:
    """Drops from the received bytes those that echo what was sent: an RS-485 adapter in
    half-duplex hears its own transmission.

    The echo of a write is expected first and in order. A received byte that differs from
    the expected echo ends the expectation (the echo was damaged or the adapter does not
    echo): the rest is passed on and the unmatched echo counted in ``lost``, as is an echo
    that has not come ``window`` seconds after its bytes left the wire.
    """

    def __init__(self, window: float = ECHO_WINDOW) -> None:
        self.window = window
        self._expected = bytearray()
        self._deadline = -math.inf
        self.echoed = 0
        self.lost = 0

    @property
    def expected(self) -> int:
        """Echo bytes still awaited."""
        return len(self._expected)

    def sent(self, data: bytes, now: float, wire_time: float) -> None:
        """``data`` was handed to the line at ``now`` and takes ``wire_time`` to go out."""
        if not data:
            return
        self._expected += data
        self._deadline = max(self._deadline, now + wire_time + self.window)

    def received(self, data: bytes, now: float) -> bytes:
        """What of ``data`` (received at ``now``) is not echo."""
        if self._expected and now > self._deadline:
            self._give_up()
        if not self._expected:
            return data
        matched = 0
        limit = min(len(data), len(self._expected))
        while matched < limit and data[matched] == self._expected[matched]:
            matched += 1
        del self._expected[:matched]
        self.echoed += matched
        if matched < len(data) and self._expected:
            self._give_up()
        return data[matched:]

    def _give_up(self) -> None:
        self.lost += len(self._expected)
        self._expected.clear()


class LinePacer:
    """When fep may transmit: only once ``gap`` seconds have passed since the last byte heard
    on the line (the turnaround a slow RS-485 device needs before it listens again) or, for
    a line just opened, since the previous session on it ended. fep's own consecutive writes
    are one transmission: no gap goes between them. Also keeps when fep's last byte leaves
    the wire, so a speed change can wait for it."""

    def __init__(self, gap: float, quiet_since: float = -math.inf) -> None:
        if gap < 0:
            raise ValueError(f"gap must not be negative, got {gap}")
        self.gap = gap
        self._heard = quiet_since
        self._sent_until = quiet_since

    @property
    def busy_until(self) -> float:
        """When the line last fell (or will fall) silent, heard or sent."""
        return max(self._heard, self._sent_until)

    def heard(self, now: float) -> None:
        self._heard = max(self._heard, now)

    def transmitted(self, now: float, wire_time: float) -> None:
        """fep handed bytes to the line at ``now``; they take ``wire_time`` to leave it."""
        self._sent_until = max(self._sent_until, now) + wire_time

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before transmitting (0: go)."""
        if self.gap <= 0:
            return 0.0
        wait = self._heard + self.gap - now
        return wait if wait > _EPSILON else 0.0

    def drained_in(self, now: float) -> float:
        """Seconds until what fep has transmitted has left the wire (0: it has)."""
        wait = self._sent_until - now
        return wait if wait > _EPSILON else 0.0


def wire_time(size: int, baudrate: int, char_bits: float) -> float:
    """Seconds ``size`` characters take on a line at ``baudrate``."""
    if baudrate <= 0:
        return 0.0
    return size * char_bits / baudrate
