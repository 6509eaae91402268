"""Another protocol's frames through a DL/T 698.45 terminal's port (sans-IO): each frame
the other protocol sends goes in a PROXY TransCommandRequest (kind 7) to the terminal, and
the bytes the terminal's port answered come back as they are.

``ForwardLink.start()`` gives the CONNECT to send first (none without an association);
``receive(bytes)`` gives events: ``Ready`` (the association is up: frames may go),
``Answer(bytes)`` (what the port answered), ``Refused(why)`` (the terminal's DAR or a
refused CONNECT), ``Reply(bytes)`` (a LINK heartbeat's answer to write); ``wrap(frame)``
the bytes of one forwarding request. Bad bytes are counted (``noise``), never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError
from fep.model import utcnow
from fep.protocols.dlt698.apdu import (
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    LinkRequest,
    ProxyRequest,
    ProxyResponse,
    ProxyTransparent,
    ReleaseRequest,
    dar_text,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.client import DEFAULT_METER_TZ
from fep.protocols.dlt698.data import COMDCB, OAD
from fep.protocols.dlt698.frames import Frame, ServerAddress, control, server_address
from fep.protocols.dlt698.terminal import LinkDecoder, link_answer

# COMDCB baud codes (DL/T 698.45): 300 ... 115200 bit/s.
BAUDS: Final = {300: 0, 600: 1, 1200: 2, 2400: 3, 4800: 4, 7200: 5, 9600: 6, 19200: 7,
                38400: 8, 57600: 9, 115200: 10}
EVEN: Final = 2


@attrs.frozen
class ForwardSettings:
    """The terminal (``address``, client address, association) and its port: ``port`` an
    OAD of F2xx (F2010201 its first RS-485), the line's ``baud`` (8 data bits, even parity,
    1 stop bit, as DL/T 645 lines run), how long the terminal waits for the port's answer
    (seconds) and between its bytes (milliseconds)."""

    address: ServerAddress = attrs.field(converter=server_address)
    port: OAD
    baud: int = 2400
    client: int = 0
    connect: bool = True
    password: str | None = None
    wakeup: bool = True
    answer_timeout: int = 10
    byte_timeout: int = 500
    tz: tzinfo = DEFAULT_METER_TZ

    def __attrs_post_init__(self) -> None:
        if self.baud not in BAUDS:
            raise ValueError(f"baud {self.baud} is none of {', '.join(map(str, BAUDS))}")

    @property
    def comdcb(self) -> COMDCB:
        return COMDCB(BAUDS[self.baud], EVEN, 8, 1, 0)


@attrs.frozen
class Ready:
    pass


@attrs.frozen
class Answer:
    data: bytes


@attrs.frozen
class Refused:
    why: str


@attrs.frozen
class Reply:
    data: bytes


Event = Ready | Answer | Refused | Reply


class ForwardLink:
    def __init__(self, settings: ForwardSettings, *,
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.settings = settings
        self.now = now
        self.decoder = LinkDecoder()
        self.noise = 0
        self.ready = not settings.connect
        self._piid = 0

    def _frame(self, apdu: bytes) -> bytes:
        s = self.settings
        frame = Frame(control(client_started=True), s.address, s.client, apdu)
        return frame.encode(preamble=4 if s.wakeup else 0)

    def _next_piid(self) -> int:
        self._piid = self._piid % 63 + 1
        return self._piid

    def start(self) -> bytes | None:
        """The CONNECT to send first, or None (no association: ready at once)."""
        s = self.settings
        if not s.connect:
            return None
        secret = s.password.encode("latin-1") if s.password else b""
        return self._frame(encode_apdu(ConnectRequest(
            self._next_piid(), mechanism=1 if s.password else 0, secret=secret)))

    def release(self) -> bytes:
        """The RELEASE ending the association."""
        return self._frame(encode_apdu(ReleaseRequest(self._next_piid())))

    def wrap(self, data: bytes) -> bytes:
        """One frame of the other protocol as a PROXY TransCommandRequest."""
        s = self.settings
        forward = ProxyTransparent(s.port, s.comdcb, s.answer_timeout, s.byte_timeout, data)
        return self._frame(encode_apdu(ProxyRequest(7, self._next_piid(), 0,
                                                    transparent=forward)))

    def receive(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        # Every frame of the bytes: an answer behind a bad frame is not left waiting for the
        # terminal's next bytes.
        for frame in self.decoder.decode_all(data):
            if isinstance(frame, FrameError):
                self.noise += 1
                continue
            if not frame.from_server or frame.split:
                continue
            try:
                apdu = decode_apdu(frame.data)
            except FrameError:
                self.noise += 1
                continue
            if isinstance(apdu, LinkRequest):
                s = self.settings
                out.append(Reply(link_answer(Frame(frame.control, s.address, s.client), apdu,
                                             self.now(), s.tz, 4 if s.wakeup else 0)))
            elif isinstance(apdu, ConnectResponse) and not self.ready:
                if apdu.result != 0:
                    out.append(Refused(f"terminal {self.settings.address.address}: CONNECT "
                                       f"refused (result {apdu.result})"))
                else:
                    self.ready = True
                    out.append(Ready())
            elif isinstance(apdu, ProxyResponse) and apdu.kind == 7:
                if apdu.command is not None:
                    out.append(Answer(apdu.command))
                else:
                    why = dar_text(apdu.dar) if apdu.dar is not None else "no answer"
                    out.append(Refused(f"terminal {self.settings.address.address}: port "
                                       f"{apdu.port}: {why}"))
            elif isinstance(apdu, ErrorResponse):
                out.append(Refused(f"terminal {self.settings.address.address}: error "
                                   f"response {apdu.kind}"))
        return out


__all__ = ["BAUDS", "Answer", "ForwardLink", "ForwardSettings", "Ready", "Refused", "Reply"]
