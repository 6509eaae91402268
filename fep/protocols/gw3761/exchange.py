"""The master station's side of the request/answer exchange with one concentrator, sans-IO:
the one place that reads its bytes. Frames in; only this terminal's uplink frames kept; what
the terminal starts by itself (login, heartbeat, reported data: PRM = 1) confirmed when it
asks; an answer matched with the open request (its first frame carries the request's PSEQ as
RSEQ) and its frames joined (FIR .. FIN) into the whole answer; silence resent, then given up.

``MasterExchange`` does that much; the read (``client``), the archive synchronisation
(``archive``), the commands (``control``) and the forwarding (``forward``) build on it with
what each asks and what each makes of a whole answer (``_answered``). Their actions share
``Send``, ``Noise`` and ``Failed`` from here. No Twisted here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Frame,
    FrameDecoder,
    Reassembler,
    TimeLabel,
)
from fep.protocols.gw3761.services import PROTOCOL, Event, Master, decode_event


@attrs.frozen
class Send:
    """Write these bytes to the concentrator."""

    data: bytes


@attrs.frozen
class Noise:
    """Bytes or a frame that are no part of the exchange: dropped (``why``), counted."""

    why: str


@attrs.frozen
class Failed:
    error: Exception


@attrs.frozen
class Step:
    """One request: what it is called in notes and errors, its AFN and its data units."""

    what: str
    afn: int
    data: bytes


class MasterExchange:
    """One request at a time to the terminal at ``address``: ``_ask`` sends a step, the
    frames ``receive`` decodes go through the filters to ``_answered`` as whole answers;
    ``timeout`` resends the open request ``retries`` times and then gives it up."""

    # The open request as the notes name it ("no open request").
    asks = "request"
    # Dropped frames count in ``noise`` (else only bytes that are no frame do).
    counts_dropped = True
    # An answer of another AFN than the request's (or AFN 00) is dropped before it is joined.
    checks_afn = False

    def __init__(self, address: Address, *, retries: int = 1, meter: str | None = None,
                 route: str | None = None, delay: int | None = None) -> None:  # fmt: skip
        self.address = address
        self.retries = retries
        self.meter = meter
        self.route = route
        self.master = Master(address, delay=delay)
        self.decoder = FrameDecoder()
        self.joiner = Reassembler()
        self.noise = 0
        self.resent = 0
        self.confirmed = 0
        self.stale = 0
        self._open: Frame | None = None
        self._current: Step | None = None
        self._attempt = 0
        self._done = False
        # The last answer frame with ACD set (the terminal has events not read yet; its EC).
        self._acd: Frame | None = None

    @property
    def done(self) -> bool:
        """The exchange is over (finished or failed): what comes after is not its."""
        return self._done

    @property
    def waiting_for(self) -> str | None:
        return None if self._current is None else f"the answer to {self._current.what}"

    def _local_now(self) -> datetime | None:
        """The terminal's local time, against which time labels (Tp) are checked; None: a
        frame's time label is not checked."""
        return None

    def _stale(self, tp: TimeLabel) -> bool:
        local = self._local_now()
        return local is not None and tp.stale(local)

    def _error(self, why: str) -> ProtocolError:
        return ProtocolError(f"concentrator {self.address}: {why}", meter=self.meter,
                             route=self.route, protocol=PROTOCOL)  # fmt: skip

    def _failed(self, why: str) -> Failed:
        """The exchange is over, failed for ``why``."""
        self._done = True
        return Failed(self._error(why))

    # -- the requests -----------------------------------------------------------------------

    def _request(self, afn: int, data: bytes, now: TimeFields | None = None) -> Frame:
        """The request frame, now the open one (an older request's answer is dropped)."""
        self._open = self.master.request(afn, data, now=now)
        self.joiner.reset()
        return self._open

    def _ask(self, step: Step, now: TimeFields | None = None) -> list[Any]:
        self._current = step
        self._attempt = 0
        return [Send(self._request(step.afn, step.data, now=now).encode())]

    def timeout(self) -> list[Any]:
        if self._done or self._current is None or self._open is None:
            return []
        if self._attempt < self.retries:
            self._attempt += 1
            self.resent += 1
            self.joiner.reset()
            return [*self._resending(self._current, self._attempt),
                    Send(self._open.encode())]  # fmt: skip
        return self._unanswered(self._current)

    def _resending(self, step: Step, attempt: int) -> list[Any]:
        """Notes to go before a resend."""
        return []

    def _unanswered(self, step: Step) -> list[Any]:
        """The open request was resent ``retries`` times without an answer."""
        self._done = True
        return [Failed(SessionTimeout(f"concentrator {self.address} did not answer {step.what}",
                                      meter=self.meter, route=self.route,
                                      protocol=PROTOCOL))]  # fmt: skip

    # -- the frames -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Any]:
        if self._done:
            return []
        actions: list[Any] = []
        for item in self.decoder.decode_all(data):
            actions += self._bad(item) if isinstance(item, FrameError) else self._frame_in(item)
        return actions

    def _bad(self, error: FrameError) -> list[Any]:
        """Bytes that are no frame (dropped by the decoder)."""
        self.noise += 1
        return [Noise(error.message)]

    def _dropped(self, why: str) -> list[Any]:
        if self.counts_dropped:
            self.noise += 1
        return [Noise(why)]

    def _frame_in(self, frame: Frame) -> list[Any]:
        if self._done:
            return self._after_end(frame)
        if not frame.uplink or frame.address.key != self.address.key:
            return self._dropped(f"frame of {frame.address} ignored")
        if frame.tp is not None and self._stale(frame.tp):
            self.stale += 1
            return [Noise(f"frame past its time label's delay of {frame.tp.delay} min dropped")]
        if frame.control.initiator:
            return self._initiated(frame)
        # An answer's first frame carries the request's PSEQ as RSEQ; the frames after it
        # count on (the joiner checks the run).
        request = self._open
        if request is None or (frame.seq.fir and frame.seq.seq != request.seq.seq):
            return self._dropped(f"answer with RSEQ {frame.seq.seq} to no open {self.asks}")
        if self.checks_afn and frame.afn not in (request.afn, Afn.CONFIRM):
            # Another exchange's answer (an event fetch of the session's report handler
            # answered late) that happens to carry this request's sequence number.
            return self._dropped(f"answer of AFN {frame.afn:02X} to a request of AFN "
                                 f"{request.afn:02X} ignored")  # fmt: skip
        if frame.ec is not None:
            self._acd = frame
        try:
            whole = self.joiner.add(frame)
        except FrameError as e:
            return self._dropped(e.message)
        if whole is None:
            return []
        return self._answered(whole)

    def _after_end(self, frame: Frame) -> list[Any]:
        """A frame after the exchange is over (in the bytes of its last answer)."""
        return []

    def _initiated(self, frame: Frame) -> list[Any]:
        """A frame the terminal started (login, heartbeat, reported data): confirmed when it
        asks (CON), its data not the exchange's."""
        if not frame.seq.con:
            return []
        self.confirmed += 1
        return [Send(self.master.confirm(frame).encode())]

    def _answered(self, whole: Frame) -> list[Any]:
        """The whole answer to the open request."""
        raise NotImplementedError

    def _event(self, whole: Frame) -> Event | Failed:
        """The whole answer decoded; when it does not decode, the exchange fails."""
        assert self._current is not None
        try:
            return decode_event(whole)
        except (FrameError, ProtocolError) as e:
            return self._failed(f"answer to {self._current.what} not decoded: {e}")


__all__ = ["Failed", "MasterExchange", "Noise", "Send", "Step"]
