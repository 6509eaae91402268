"""Transparent forwarding through a concentrator (AFN 10 F1), sans-IO: the bytes a meter
session writes go to the concentrator wrapped in an AFN 10 F1 request (port, line settings,
timeouts, length, the bytes), and the bytes of its AFN 10 F1 answer come back unwrapped.

``Forwarder.wrap(payload)`` gives the frame to send; ``Forwarder.receive(bytes)`` the
actions: ``Answer(payload)`` (the meter's bytes, for the meter session), ``Send(bytes)``
(the confirmation of a login or heartbeat the concentrator sends meanwhile), ``Refused(why)``
(the forwarding failed: the meter did not answer, or the concentrator denied it) and
``Noise(why)`` (a frame that is not the answer: counted and dropped). No Twisted here.
"""

from __future__ import annotations

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlt645 import frames as dlt645_frames
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.exchange import MasterExchange, Noise, Send
from fep.protocols.gw3761.frames import Address, Afn, Frame
from fep.protocols.gw3761.services import (
    Confirmed,
    Data,
    Denied,
    ForwardAnswer,
    ForwardRequest,
    Trip,
)

# The standard's frame timeout byte holds up to 127 s; the line settings AFN 10 F1 can say.
MAX_TIMEOUT = 127
PARITIES = ("N", "E", "O")


@attrs.frozen
class ForwardSettings:
    """Where and how a concentrator forwards: its communication port (1..31) for the meter,
    the port's line settings, how long it waits for the meter's answer (``timeout``, whole
    seconds, 1..127) and between the answer's bytes (``byte_timeout``)."""

    port: int
    baud: int = 2400
    parity: str = "E"
    data_bits: int = 8
    stop_bits: int = 1
    timeout: float = 5.0
    byte_timeout: float = 0.1

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.port <= 31:
            raise ValueError(f"port {self.port} is not 1..31")
        if self.baud not in services.BAUDS:
            raise ValueError(f"baud {self.baud} is not one of "
                             f"{', '.join(map(str, services.BAUDS))}")  # fmt: skip
        if self.parity not in PARITIES:
            raise ValueError(f"parity {self.parity!r} is not N, E or O")
        if not 1 <= self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout {self.timeout:g} s is not 1..{MAX_TIMEOUT} seconds")
        if not 0 <= self.byte_timeout <= 2.55:
            raise ValueError(f"byte timeout {self.byte_timeout:g} s is not 0..2.55 seconds")

    def request(self, payload: bytes) -> ForwardRequest:
        return ForwardRequest(self.port, payload, self.baud, self.parity, self.data_bits,
                              self.stop_bits, float(int(self.timeout)),
                              self.byte_timeout)  # fmt: skip


@attrs.frozen
class Answer:
    payload: bytes


@attrs.frozen
class Refused:
    why: str


@attrs.frozen
class Controlled:
    """The concentrator confirmed a remote control (AFN 05 F1 trip / F2 allow closing) of
    ``point``; ``denied`` says why not when it did not."""

    point: int
    trip: bool
    denied: str | None = None


Action = Send | Answer | Refused | Noise | Controlled


def dlt645_address(payload: bytes) -> str | None:
    """The meter address of a DL/T 645 frame in ``payload`` (None: not one)."""
    try:
        found = dlt645_frames.FrameDecoder().receive(payload)
    except (FrameError, ValueError):
        return None
    return found[0].address if found else None


class Forwarder(MasterExchange):
    """One forwarding at a time to ``settings.port`` of the concentrator at ``address``
    (the meter session above resends: a resend is a new forwarding)."""

    asks = "forwarding"

    def __init__(self, address: Address, settings: ForwardSettings) -> None:
        super().__init__(address)
        self.settings = settings
        self._target: str | None = None
        # The remote control waiting for its confirmation: (point, trip).
        self._control: tuple[int, bool] | None = None
        self.forwarded = 0

    @property
    def waiting(self) -> bool:
        return self._open is not None

    @property
    def target(self) -> str | None:
        """The meter address of the frame being forwarded (when it is a DL/T 645 frame)."""
        return self._target

    def wrap(self, payload: bytes) -> bytes:
        """The AFN 10 F1 request carrying ``payload``; a later answer to an earlier request
        is dropped as noise."""
        unit = services.encode_unit(Afn.FORWARD, [0], [1], False,
                                    {(0, 1): self.settings.request(payload)})  # fmt: skip
        frame = self._request(Afn.FORWARD, unit)
        self._target = dlt645_address(payload)
        self.forwarded += 1
        return frame.encode()

    def control(self, point: int, trip: bool) -> bytes:
        """AFN 05 remote control of ``point`` (Q/GDW 1376.1-2013, control commands: F1 remote
        trip, no alarm delay, until allowed to close; F2 allow closing), with PW; its
        confirmation comes back as ``Controlled``."""
        fn = 1 if trip else 2
        unit = services.encode_unit(Afn.CONTROL, [point], [fn], False,
                                    {(point, fn): Trip()} if trip else None)  # fmt: skip
        frame = self._request(Afn.CONTROL, unit)
        self._target = None
        self._control = (point, trip)
        return frame.encode()

    def _answered(self, whole: Frame) -> list[Action]:
        try:
            event = services.decode_event(whole)
        except (FrameError, ProtocolError) as e:
            self._open = None
            return [Refused(f"its answer does not decode: {e}")]
        if self._control is not None:
            point, trip = self._control
            if isinstance(event, Confirmed | Denied):
                self._open = self._control = None
                why = ("the concentrator denied the remote control (AFN 00 F2)"
                       if isinstance(event, Denied) else None)  # fmt: skip
                return [Controlled(point, trip, why)]
            return self._dropped(f"AFN {whole.afn:02X} answer to a remote control dropped")
        if isinstance(event, Denied):
            self._open = None
            return [Refused("the concentrator denied the forwarding (AFN 00 F2)")]
        answers = [i.value for i in event.items if isinstance(i.value, ForwardAnswer)] if (
            isinstance(event, Data) and event.afn == Afn.FORWARD) else []
        if not answers:
            return self._dropped(f"AFN {whole.afn:02X} answer to a forwarding dropped")
        self._open = None
        payload = b"".join(a.payload for a in answers)
        if not payload:
            if self._target == dlt645_frames.BROADCAST_ADDRESS:
                return []  # a broadcast has no answer
            return [Refused("the meter did not answer")]
        return [Answer(payload)]


__all__ = [
    "Answer",
    "Controlled",
    "ForwardSettings",
    "Forwarder",
    "Noise",
    "Refused",
    "Send",
    "dlt645_address",
]
