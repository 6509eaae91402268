"""IEC 62056-21 messages on the wire: sign-on, identification, option select, ACK/NAK, break,
the readout data block with its BCC, and a streaming decoder from bytes to those messages.

Sans-IO: no Twisted here. The decoder takes bytes as they come and gives typed messages, or
nothing yet ("need more"); a malformed frame raises FrameError naming the stream offset.
Nothing else is raised (fuzzed by tests/fuzz); lines are at most MAX_LINE bytes and blocks
MAX_BLOCK.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder

SOH: Final = 0x01
STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ACK: Final = 0x06
NAK: Final = 0x15
CRLF: Final = b"\r\n"

# Mode C baud rate characters (IEC 62056-21, 6.3.14); mode B uses letters A..I.
MODE_C_BAUD: Final = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
MODE_B_BAUD: Final = {
    "A": 600,
    "B": 1200,
    "C": 2400,
    "D": 4800,
    "E": 9600,
    "F": 19200,
}
BAUD_CHAR_BY_RATE: Final = {rate: char for char, rate in MODE_C_BAUD.items()}

# Limits that keep a garbage stream from growing the buffer without bound. The standard
# caps the device address at 32 characters and the identification at 16 (plus the
# manufacturer, baud character and an escape sequence); readouts of large meters run to tens
# of kilobytes at most.
MAX_LINE: Final = 128
MAX_BLOCK: Final = 1 << 20

_ADDRESS_RE = re.compile(rb"^[0-9A-Za-z ]{0,32}$")
_IDENT_RE = re.compile(
    rb"^/(?P<man>[A-Za-z]{3})(?P<baud>[\x21-\x7E])(?P<esc>(?:\\[0-9A-Za-z])*)(?P<ident>[^\r\n/!]*)$"
)


def baud_for_char(char: str) -> int | None:
    """The baud rate a mode C or mode B baud character stands for, None for others (mode A)."""
    return MODE_C_BAUD.get(char) or MODE_B_BAUD.get(char)


def bcc(data: bytes) -> int:
    """The block check character: XOR of every byte after STX/SOH up to and including ETX."""
    value = 0
    for byte in data:
        value ^= byte
    return value


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@attrs.frozen
class SignOn:
    """Request message ``/?<address>!CRLF``; an empty address asks any meter on the line."""

    address: str = ""

    def encode(self) -> bytes:
        return b"/?" + self.address.encode("ascii") + b"!" + CRLF


@attrs.frozen
class Identification:
    """Identification message ``/XXXZ<ident>CRLF`` (``\\W`` escapes between Z and ident are
    kept in ``escapes``, e.g. ``\\2`` for mode E capable meters)."""

    manufacturer: str
    baud_char: str
    identification: str
    escapes: str = ""

    @property
    def text(self) -> str:
        """The line as sent, without ``/`` and CRLF: the meter's identity for lookups."""
        return f"{self.manufacturer}{self.baud_char}{self.escapes}{self.identification}"

    @property
    def baudrate(self) -> int | None:
        return baud_for_char(self.baud_char)

    @property
    def fast_reaction(self) -> bool:
        """A lower-case third manufacturer letter announces 20 ms minimum reaction time."""
        return self.manufacturer[2:3].islower()

    def encode(self) -> bytes:
        return b"/" + self.text.encode("ascii") + CRLF


@attrs.frozen
class OptionSelect:
    """Acknowledgement/option select ``ACK V Z Y CRLF``: protocol control V, baud char Z,
    mode Y (``0`` data readout, ``1`` programming)."""

    baud_char: str = "0"
    mode: str = "0"
    protocol: str = "0"

    def encode(self) -> bytes:
        return bytes([ACK]) + f"{self.protocol}{self.baud_char}{self.mode}".encode("ascii") + CRLF


@attrs.frozen
class Ack:
    """A lone ACK."""

    def encode(self) -> bytes:
        return bytes([ACK])


@attrs.frozen
class Nak:
    """A lone NAK (repeat request)."""

    def encode(self) -> bytes:
        return bytes([NAK])


@attrs.frozen
class Command:
    """A programming-mode command ``SOH C D STX data ETX BCC`` or ``SOH C D ETX BCC``
    (``B0``: break, end of session)."""

    command: str
    command_type: str
    data: bytes | None = None

    def encode(self) -> bytes:
        body = f"{self.command}{self.command_type}".encode("ascii")
        if self.data is not None:
            body += bytes([STX]) + self.data
        body += bytes([ETX])
        return bytes([SOH]) + body + bytes([bcc(body)])


BREAK = Command("B", "0")


@attrs.frozen
class DataBlock:
    """A data block ``STX data ETX BCC`` with the BCC as received (checked by ``check``)."""

    data: bytes
    received_bcc: int
    # Offset of the STX in the decoder's stream, for error messages.
    offset: int = 0

    @property
    def computed_bcc(self) -> int:
        return bcc(self.data + bytes([ETX]))

    @property
    def bcc_ok(self) -> bool:
        return self.computed_bcc == self.received_bcc

    def check(self) -> DataBlock:
        """Self if the BCC matches; FrameError naming both values otherwise."""
        if not self.bcc_ok:
            raise FrameError(
                f"bad BCC in readout: computed 0x{self.computed_bcc:02X}, "
                f"received 0x{self.received_bcc:02X}",
                offset=self.offset + len(self.data) + 2,
                field="BCC",
            )
        return self

    @classmethod
    def build(cls, data: bytes) -> DataBlock:
        return cls(data, bcc(data + bytes([ETX])))

    def encode(self) -> bytes:
        return bytes([STX]) + self.data + bytes([ETX, self.received_bcc])


Message = SignOn | Identification | OptionSelect | Ack | Nak | Command | DataBlock


# ---------------------------------------------------------------------------
# Line parsers (one complete line each, without CRLF)
# ---------------------------------------------------------------------------


def parse_sign_on(line: bytes, offset: int = 0) -> SignOn:
    if not (line.startswith(b"/?") and line.endswith(b"!")):
        raise FrameError(f"not a sign-on message: {line!r}", offset=offset, field="sign-on")
    address = line[2:-1]
    if not _ADDRESS_RE.match(address):
        raise FrameError(
            f"bad device address in sign-on: {address!r}", offset=offset + 2, field="address"
        )
    return SignOn(address.decode("ascii"))


def parse_identification(line: bytes, offset: int = 0) -> Identification:
    m = _IDENT_RE.match(line)
    if m is None:
        raise FrameError(
            f"not an identification message: {line!r}", offset=offset, field="identification"
        )
    ident = m["ident"]
    if any(b < 0x20 or b > 0x7E for b in ident):
        raise FrameError(
            f"non-printable byte in identification: {line!r}",
            offset=offset,
            field="identification",
        )
    return Identification(
        m["man"].decode("ascii"),
        m["baud"].decode("ascii"),
        ident.decode("ascii"),
        m["esc"].decode("ascii"),
    )


# ---------------------------------------------------------------------------
# Streaming decoder
# ---------------------------------------------------------------------------


# What may start a frame after garbage: searched in C, not byte by byte (junk streams).
_FRAME_START: Final = re.compile(b"[/\x02]")


class FrameDecoder(StreamDecoder[Message]):
    """Turns a byte stream (either direction) into messages.

    ``receive(data)`` returns every message completed so far (an empty list means "need
    more"). On a malformed frame it raises FrameError with ``offset`` counted from the start
    of the stream; the offending bytes are dropped first, so calling ``receive(b"")`` again
    goes on with what follows. ``skip_to_frame_start()`` drops bytes up to the next ``/`` or
    STX (garbage before an identification on a push connection).
    """

    def __init__(self, *, lone_ack: bool = False) -> None:
        super().__init__()
        # Where the search for the ETX of the block at the head of the buffer goes on.
        self._etx_scanned = 1
        # The programming-mode client's side: the meter sends lone ACKs (a password or a
        # write accepted) and never an option select, so an ACK is complete at once.
        self.lone_ack = lone_ack

    def skip_to_frame_start(self) -> int:
        """Drop bytes up to the next ``/`` or STX; returns how many were dropped."""
        found = _FRAME_START.search(self._buffer)
        n = found.start() if found is not None else len(self._buffer)
        self._consume(n)
        return n

    def receive(self, data: bytes) -> list[Message]:
        # Unlike the base, a bad frame raises at once: the mode C client and the push
        # receiver decide per frame what to drop.
        self._buffer += data
        messages: list[Message] = []
        while self._buffer:
            message = self._next()
            if message is None:
                break
            messages.append(message)
        return messages

    def _consume(self, n: int) -> None:
        super()._consume(n)
        self._etx_scanned = 1

    def _find_etx(self) -> int:
        """The ETX of the block or command at the head of the buffer, -1 while it has not
        come; bytes already searched are not searched again (a block arriving in small
        pieces would cost work quadratic in its length)."""
        end = self._buffer.find(ETX, self._etx_scanned)
        self._etx_scanned = end if end >= 0 else max(1, len(self._buffer))
        return end

    def _fail(self, message: str, drop: int, field: str, at: int = 0) -> FrameError:
        error = FrameError(message, offset=self._base + at, field=field)
        self._consume(max(drop, 1))
        return error

    def _line(self) -> bytes | None:
        """A CRLF-terminated line at the head of the buffer (consumed), or None."""
        end = self._buffer.find(CRLF)
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                raise self._fail(
                    f"line longer than {MAX_LINE} bytes without CRLF",
                    len(self._buffer),
                    "line",
                )
            return None
        if end > MAX_LINE:
            raise self._fail(f"line longer than {MAX_LINE} bytes", end + 2, "line")
        line = bytes(self._buffer[:end])
        return line

    def _next(self) -> Message | None:
        buf = self._buffer
        if not buf:
            return None
        first = buf[0]
        base = self._base
        if first == 0x2F:  # '/'
            line = self._line()
            if line is None:
                return None
            try:
                if line.startswith(b"/?"):
                    msg: Message = parse_sign_on(line, base)
                else:
                    msg = parse_identification(line, base)
            except FrameError:
                self._consume(len(line) + 2)
                raise
            self._consume(len(line) + 2)
            return msg
        if first == ACK:
            if self.lone_ack:
                self._consume(1)
                return Ack()
            if len(buf) == 1:
                # A lone ACK, or the start of an option select still on its way. The
                # readout client never receives either, the meter side waits for CRLF.
                return None
            if not 0x30 <= buf[1] <= 0x39:
                self._consume(1)
                return Ack()
            if len(buf) < 6:
                return None
            if buf[4:6] != CRLF:
                raise self._fail(f"bad option select: {bytes(buf[:6])!r}", 6, "option select")
            text = bytes(buf[1:4]).decode("ascii", "replace")
            self._consume(6)
            if not all(c.isalnum() for c in text):
                raise FrameError(
                    f"bad option select characters {text!r}", offset=base, field="option select"
                )
            return OptionSelect(protocol=text[0], baud_char=text[1], mode=text[2])
        if first == NAK:
            self._consume(1)
            return Nak()
        if first == STX:
            end = self._find_etx()
            if end < 0 or end + 1 >= len(buf):
                if len(buf) > MAX_BLOCK:
                    raise self._fail(
                        f"data block longer than {MAX_BLOCK} bytes without ETX",
                        len(buf),
                        "data block",
                    )
                return None
            block = DataBlock(bytes(buf[1:end]), buf[end + 1], base)
            self._consume(end + 2)
            return block
        if first == SOH:
            end = self._find_etx()
            if end < 0 or end + 1 >= len(buf):
                if len(buf) > MAX_BLOCK:
                    raise self._fail("command longer than allowed", len(buf), "command")
                return None
            body = bytes(buf[1:end])
            received = buf[end + 1]
            self._consume(end + 2)
            computed = bcc(body + bytes([ETX]))
            if computed != received:
                raise FrameError(
                    f"bad BCC in command: computed 0x{computed:02X}, received 0x{received:02X}",
                    offset=base + end + 1,
                    field="BCC",
                )
            if len(body) < 2:
                raise FrameError(f"command too short: {body!r}", offset=base + 1, field="command")
            head, _, data = body.partition(bytes([STX]))
            if len(head) != 2:
                raise FrameError(f"bad command id {head!r}", offset=base + 1, field="command")
            command = head.decode("ascii", "replace")
            return Command(command[0], command[1], data if STX in body else None)
        raise self._fail(
            f"unexpected byte 0x{first:02X} where a message should start", 1, "message start"
        )
