"""The Modbus client transaction layer as a sans-IO state machine: one request at a time to
one unit, over RTU or TCP framing, its answer matched (unit, function, transaction id,
byte count or write echo), line noise and stale answers skipped and counted, requests sent
again after silence.

``send(request)`` gives ``Send(bytes)`` (then arm the answer timer); ``receive(bytes)``,
``silence()`` and ``timeout()`` give more actions: ``Answered(response)``,
``Refused(error)`` for an exception response (a named ``ModbusException``), ``Noise(why)``
for bytes that were no answer, ``Resent`` and ``Failed(SessionTimeout)`` when the retries
are spent. Bad bytes never raise. Sans-IO: no Twisted.
"""

from __future__ import annotations

import enum

import attrs

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.protocols.modbus import rtu, tcp
from fep.protocols.modbus.pdu import (
    PROTOCOL,
    ExceptionResponse,
    Function,
    ModbusException,
    ReadRequest,
    Request,
    Response,
    check_response,
    decode_response,
    exception_for,
)


class Framing(enum.StrEnum):
    RTU = "rtu"
    TCP = "tcp"


@attrs.frozen
class Send:
    """Write these bytes (then arm the answer timer)."""

    data: bytes


@attrs.frozen
class Answered:
    request: Request
    response: Response


@attrs.frozen
class Refused:
    request: Request
    error: ModbusException


@attrs.frozen
class Noise:
    why: str


@attrs.frozen
class Resent:
    attempt: int
    why: str


@attrs.frozen
class Failed:
    request: Request
    error: ProtocolError


Action = Send | Answered | Refused | Noise | Resent | Failed


def _address(request: Request) -> int:
    return request.address


def answer_length(request: Request) -> int:
    """The PDU length of a good answer to ``request``."""
    if isinstance(request, ReadRequest):
        return 2 + request.response_bytes
    return 5


class ModbusClient:
    """Transactions with one unit. ``retries`` is how often a request goes out again after
    silence; ``meter``/``route`` name the errors."""

    def __init__(
        self,
        framing: Framing,
        unit: int,
        *,
        retries: int = 1,
        meter: str | None = None,
        route: str | None = None,
    ) -> None:
        if framing is Framing.RTU and not 1 <= unit <= rtu.MAX_UNIT:
            raise ValueError(f"RTU unit id {unit} out of 1..{rtu.MAX_UNIT}")
        if not 0 <= unit <= 255:
            raise ValueError(f"unit id {unit} out of 0..255")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.framing = framing
        self.unit = unit
        self.retries = retries
        self.meter = meter
        self.route = route
        self._decoder: rtu.RtuDecoder | tcp.MbapDecoder = (
            rtu.RtuDecoder() if framing is Framing.RTU else tcp.MbapDecoder()
        )
        self._transaction = 0
        self._request: Request | None = None
        self._wire = b""
        self._attempt = 0
        # Counters for the session's log line.
        self.requests = 0
        self.answers = 0
        self.noise = 0
        self.stale = 0
        self.echoes = 0
        self.resent = 0

    @property
    def waiting_for(self) -> str | None:
        r = self._request
        if r is None:
            return None
        return f"the answer to function {int(r.function)} at address {r.address}"

    @property
    def line_garbage(self) -> int:
        return self._decoder.skipped

    def send(self, request: Request) -> list[Action]:
        if self._request is not None:
            raise ProtocolError("a Modbus request is already waiting for its answer",
                                meter=self.meter, route=self.route, protocol=PROTOCOL)
        self._request = request
        self._attempt = 0
        self.requests += 1
        if self.framing is Framing.TCP:
            self._transaction = (self._transaction + 1) & 0xFFFF
            self._wire = tcp.encode(self._transaction, self.unit, request.encode())
        else:
            self._wire = rtu.encode(self.unit, request.encode())
            assert isinstance(self._decoder, rtu.RtuDecoder)
            self._decoder.expected = frozenset({2, answer_length(request)})
        return [Send(self._wire)]

    def timeout(self) -> list[Action]:
        request = self._request
        if request is None:
            return []
        if self._attempt < self.retries:
            self._attempt += 1
            self.resent += 1
            if isinstance(self._decoder, rtu.RtuDecoder):
                self._decoder.silence()
            return [Resent(self._attempt, "no answer in time"), Send(self._wire)]
        self._request = None
        return [Failed(request, SessionTimeout(
            f"no answer from unit {self.unit} to function {int(request.function)} at address "
            f"{request.address}", meter=self.meter, route=self.route, protocol=PROTOCOL))]

    def silence(self) -> list[Action]:
        """The line has been quiet for the RTU frame gap: a partial frame is garbage."""
        if isinstance(self._decoder, rtu.RtuDecoder):
            dropped = self._decoder.silence()
            if dropped:
                self.noise += 1
                return [Noise(f"{dropped} bytes that were no whole frame before a pause")]
        return []

    def receive(self, data: bytes) -> list[Action]:
        actions: list[Action] = []
        feed = data
        if self.framing is Framing.RTU and self._request is not None and self._wire:
            # A half-duplex line (RS-485 without echo cancelling) hears its own request.
            feed = self._strip_echo(feed)
        for item in self._decoder.decode_all(feed):
            if isinstance(item, FrameError):
                self.noise += 1
                actions.append(Noise(item.message))
            else:
                actions.extend(self._frame(item))
        return actions

    def _strip_echo(self, data: bytes) -> bytes:
        request = self._request
        if request is not None and request.function in (Function.WRITE_SINGLE_COIL,
                                                        Function.WRITE_SINGLE_REGISTER):
            # The answer to a single write is the request itself: an echo looks the same
            # and is taken as the answer (a second copy is then stale).
            return data
        if self._decoder.buffered == 0 and data.startswith(self._wire):
            self.echoes += 1
            return data[len(self._wire):]
        return data

    def _frame(self, frame: rtu.RtuFrame | tcp.TcpFrame) -> list[Action]:
        request = self._request
        if request is None:
            self.stale += 1
            return [Noise("an answer when none was asked for")]
        if isinstance(frame, tcp.TcpFrame) and frame.transaction != self._transaction:
            self.stale += 1
            return [Noise(f"answer to transaction {frame.transaction}, waiting for "
                          f"{self._transaction}")]
        if frame.unit != self.unit and not (
            isinstance(frame, tcp.TcpFrame) and self.unit in (0, 255)
        ):
            self.stale += 1
            return [Noise(f"answer from unit {frame.unit}, asked unit {self.unit}")]
        try:
            response = decode_response(frame.pdu)
        except FrameError as e:
            self.noise += 1
            return [Noise(f"damaged answer: {e.message}")]
        why = check_response(request, response)
        if why is not None:
            self.stale += 1
            return [Noise(f"not the answer asked for: {why}")]
        self._request = None
        self.answers += 1
        if isinstance(response, ExceptionResponse):
            return [Refused(request, exception_for(
                response.function, response.code, address=_address(request), unit=self.unit,
                meter=self.meter, route=self.route))]
        return [Answered(request, response)]


__all__ = [
    "Action",
    "Answered",
    "Failed",
    "Framing",
    "ModbusClient",
    "Noise",
    "Refused",
    "Resent",
    "Send",
]
