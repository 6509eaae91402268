"""The Hayes AT command engine as a sans-IO state machine: commands go out one at a time,
answers come back as typed outputs, and no clock or I/O is touched here.

The caller (a Twisted adapter, or a test with bytes) feeds what the modem sent to
``receive(bytes)`` and queues commands with ``submit(Command)``. Every method returns a list of
outputs, in order:

- ``Transmit(data)``: write these bytes to the modem.
- ``Deadline(seconds)``: (re)arm the one timer for the command now in progress; ``None``
  disarms it. When it expires the caller calls ``expire()``.
- ``Response(command, result, lines)``: a command ended with its final result code (OK,
  CONNECT [text], NO CARRIER, ERROR, NO DIALTONE, BUSY, NO ANSWER, +CME ERROR, +CMS ERROR)
  and the information lines it produced.
- ``TimedOut(command, lines)``: its deadline passed first.
- ``Unsolicited(name, value, line, body)``: an unsolicited result code (RING, +CMTI, +CDS,
  +CREG, ...) that arrived between or during commands; two-line ones (+CMT, +CBM, +CDS in PDU
  mode) carry their second line in ``body``.
- ``Data(bytes)``: after CONNECT the line is online: bytes are the remote end's.
- ``CarrierLost(line)``: the modem said NO CARRIER while online.
- ``Noise(data, reason)``: bytes that belong to nothing (a line outside any command, an
  over-long line); counted in ``noise``, never raised.

Echo on or off needs no setting (an echo is the command's own text before any answer);
verbose (``ATV1``) and numeric (``ATV0``) result codes are both understood, and the engine
follows ``E``/``V``/``Z``/``&F`` in the commands it sends. A command with a ``body`` (AT+CMGS,
AT+CMGW) waits for the ``> `` prompt, then sends the body ended by Ctrl-Z (ESC cancels it on
timeout). ``escape()`` sends ``+++`` while online (the caller keeps the guard time before it);
its OK is the ``Response`` of the pseudo-command ``ESCAPE``.

Dialects: an answer some modems end without a final result code is finished by
``Command.final_optional`` (an implied OK, ``FinalResult.implied``); ``urc_names`` takes a
modem's own unsolicited codes; ``COMMAND NOT SUPPORT`` (ZTE, Huawei) is an ERROR. The
per-model table is ``fep.channels.modem.dialects``.

Limit: an answer that comes after its command timed out is taken for the next command's
(modems give no command ids); callers reset the modem (ATZ) after a timeout.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from fep.channels.modem.error_codes import cme_code, cme_meaning, cms_code, cms_meaning
from fep.errors import ChannelError, ConfigError

CTRL_Z: Final = b"\x1a"
ESC: Final = b"\x1b"
# Longest line kept; beyond it the bytes are dropped as noise (a modem line is < 1 kB, a PDU
# line at most 2 * 176 hex digits).
MAX_LINE: Final = 4096


class ModemError(ChannelError):
    """A modem refused a command or gave an unexpected result: names the line, the command
    and the final result (its +CME/+CMS meaning when there is one)."""

    def __init__(
        self,
        message: str,
        *,
        line: str | None = None,
        command: str | None = None,
        result: FinalResult | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message, route=route)
        self.line = line
        self.command = command
        self.result = result


class ModemTimeout(ModemError):
    """A command's deadline passed without a final result code; ``body_sent`` when an
    AT+CMGS body had been typed (the modem may have sent the text)."""

    body_sent: bool = False


class ResultCode(enum.Enum):
    """Final result codes (ITU-T V.250 5.7.1 and 3GPP TS 27.007/27.005 errors)."""

    OK = "OK"
    CONNECT = "CONNECT"
    RING = "RING"
    NO_CARRIER = "NO CARRIER"
    ERROR = "ERROR"
    NO_DIALTONE = "NO DIALTONE"
    BUSY = "BUSY"
    NO_ANSWER = "NO ANSWER"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"


# V.250 table 1 numeric codes, then the CONNECT <speed> codes most chipsets (Rockwell family)
# add; a ModemProfile may give another table.
NUMERIC_RESULTS: Final[Mapping[int, tuple[ResultCode, str | None]]] = {
    0: (ResultCode.OK, None),
    1: (ResultCode.CONNECT, None),
    2: (ResultCode.RING, None),
    3: (ResultCode.NO_CARRIER, None),
    4: (ResultCode.ERROR, None),
    5: (ResultCode.CONNECT, "1200"),
    6: (ResultCode.NO_DIALTONE, None),
    7: (ResultCode.BUSY, None),
    8: (ResultCode.NO_ANSWER, None),
    10: (ResultCode.CONNECT, "2400"),
    11: (ResultCode.CONNECT, "4800"),
    12: (ResultCode.CONNECT, "9600"),
    13: (ResultCode.CONNECT, "7200"),
    14: (ResultCode.CONNECT, "12000"),
    15: (ResultCode.CONNECT, "14400"),
    16: (ResultCode.CONNECT, "19200"),
    17: (ResultCode.CONNECT, "38400"),
    18: (ResultCode.CONNECT, "57600"),
    19: (ResultCode.CONNECT, "115200"),
}
NUMERIC_OF: Final[Mapping[ResultCode, int]] = {
    ResultCode.OK: 0,
    ResultCode.CONNECT: 1,
    ResultCode.RING: 2,
    ResultCode.NO_CARRIER: 3,
    ResultCode.ERROR: 4,
    ResultCode.NO_DIALTONE: 6,
    ResultCode.BUSY: 7,
    ResultCode.NO_ANSWER: 8,
}

# Unsolicited result codes: V.250, 27.007, 27.005, and common vendor ones (Huawei ^, SIMCom).
URC_NAMES: Final[frozenset[str]] = frozenset({
    "RING", "NO CARRIER", "+CRING", "+CLIP", "+CCWA", "+CMTI", "+CMT", "+CDS", "+CDSI",
    "+CBM", "+CBMI", "+CREG", "+CGREG", "+CEREG", "+CUSD", "+CIEV", "+CPIN", "+CGEV",
    "+CSQN", "^RSSI", "^BOOT", "^MODE", "^SRVST", "^SIMST", "^HCSQ", "RDY", "CALL READY",
    "SMS READY", "+PDP", "+CFUN", "+WIND", "^ORIG", "^CONF", "^CONN", "^CEND", "+ZDONR",
    "+ZPASR", "^SMMEMFULL", "^SYSSTART", "+QIND", "+QUSIM", "+CTZV", "+CTZE", "*PSUTTZ",
    "DST", "+STIN", "#QSS", "+CPINR", "+SIM READY", "+ZUSIMR",
})
# URCs whose next line belongs to them (27.005 3.4.1: +CMT, +CBM, +CDS in PDU mode).
_TWO_LINE: Final = frozenset({"+CMT", "+CBM"})

_ERROR_WORDS: Final[Mapping[str, ResultCode]] = {
    "OK": ResultCode.OK,
    "ERROR": ResultCode.ERROR,
    "COMMAND NOT SUPPORT": ResultCode.ERROR,  # ZTE modems
    "NO CARRIER": ResultCode.NO_CARRIER,
    "NO DIALTONE": ResultCode.NO_DIALTONE,
    "NO DIAL TONE": ResultCode.NO_DIALTONE,
    "BUSY": ResultCode.BUSY,
    "NO ANSWER": ResultCode.NO_ANSWER,
}
_CONNECT = re.compile(r"CONNECT(?:[ /:]\s*(.*))?", re.IGNORECASE)
_EXTENDED_ERROR = re.compile(r"\+(CME|CMS) ERROR:?\s*(.*)", re.IGNORECASE)
_BASIC = re.compile(r"S\d+(?:=\d*|\?)?|&?[A-Z]\d*")
_ONLINE_NO_CARRIER = re.compile(rb"(?:\r\n|[\r\n])NO CARRIER\r")
_ESCAPE_OK = re.compile(rb"(?:\r\n|[\r\n]|^)OK\r")
_ESCAPE_OK_NUMERIC = re.compile(rb"(?:\r\n|[\r\n]|^)0\r")
_SCAN_TAIL: Final = 16


class State(enum.Enum):
    IDLE = "idle"  # command mode, nothing in progress
    COMMAND = "command"  # a command sent, waiting for its final result code
    PROMPT = "prompt"  # a body command sent, waiting for "> "
    BODY = "body"  # the body sent, waiting for the final result code
    ONLINE = "online"  # connected: bytes are data
    ESCAPING = "escaping"  # "+++" sent while online, waiting for OK


@attrs.frozen
class Command:
    """One AT command line (without the final CR), its deadline in seconds, and for
    AT+CMGS/AT+CMGW the body sent after the ``> `` prompt (Ctrl-Z is appended)."""

    text: str
    timeout: float = 5.0
    body: bytes | None = None
    # Some modems end some answers without a final result code (Wavecom: ``AT+CPIN?`` ->
    # ``+CPIN: READY`` and nothing more). When set, the answer also ends this many seconds
    # after its first information line (0: at once) with an implied OK.
    final_optional: float | None = None

    def __attrs_post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("empty AT command")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError(f"AT command {self.text!r} contains a line end")
        if not self.text.isascii():
            raise ValueError(f"AT command {self.text!r} is not ASCII")
        if self.timeout <= 0:
            raise ValueError(f"AT command {self.text!r}: timeout must be positive")
        if self.body is not None and (CTRL_Z in self.body or ESC in self.body):
            raise ValueError(f"AT command {self.text!r}: body contains Ctrl-Z or ESC")
        if self.final_optional is not None and self.final_optional < 0:
            raise ValueError(f"AT command {self.text!r}: final_optional must not be negative")

    def encode(self) -> bytes:
        return self.text.encode("ascii") + b"\r"


# The pseudo-command of the escape sequence: its Response is the OK after "+++".
ESCAPE: Final = Command("+++", timeout=3.0)


@attrs.frozen
class FinalResult:
    """A final result code as received: the code, the line, the text after CONNECT
    (``"9600/V.32"``) or after +CME/+CMS ERROR, and the error number when there is one.
    ``implied`` is true for the OK of an answer the modem ended without one (see
    ``Command.final_optional``)."""

    code: ResultCode
    line: str
    detail: str | None = None
    error: int | None = None
    implied: bool = False

    @property
    def speed(self) -> int | None:
        """The line speed of a CONNECT, when its text starts with one."""
        if self.code is not ResultCode.CONNECT or not self.detail:
            return None
        m = re.match(r"\d+", self.detail)
        return int(m.group(0)) if m else None

    @property
    def meaning(self) -> str | None:
        """What a +CME/+CMS ERROR means (27.007 9.2, 27.005 3.2.5)."""
        if self.code is ResultCode.CME_ERROR:
            return cme_meaning(self.error) if self.error is not None else self.detail
        if self.code is ResultCode.CMS_ERROR:
            return cms_meaning(self.error) if self.error is not None else self.detail
        return None

    def describe(self) -> str:
        if self.code in (ResultCode.CME_ERROR, ResultCode.CMS_ERROR):
            number = "" if self.error is None else f" {self.error}"
            return f"{self.code.value}{number}: {self.meaning}"
        if self.detail:
            return f"{self.code.value} {self.detail}"
        return self.code.value


@attrs.frozen
class Transmit:
    data: bytes


@attrs.frozen
class Deadline:
    """Arm the command timer for ``seconds`` from now (replacing any armed one); None
    disarms it."""

    seconds: float | None


@attrs.frozen
class Response:
    command: Command
    result: FinalResult
    lines: tuple[str, ...] = ()

    @property
    def code(self) -> ResultCode:
        return self.result.code

    @property
    def ok(self) -> bool:
        return self.result.code is ResultCode.OK


@attrs.frozen
class TimedOut:
    """A command's deadline passed. ``body_sent``: a body command (AT+CMGS) had typed its
    body already, so the modem may have acted on it (a text may have gone)."""

    command: Command
    lines: tuple[str, ...] = ()
    body_sent: bool = False


@attrs.frozen
class Unsolicited:
    """An unsolicited result code: ``name`` (``"+CMTI"``, ``"RING"``), ``value`` (the text
    after the colon), the whole ``line``, and the second line of two-line codes."""

    name: str
    value: str
    line: str
    body: str | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return split_params(self.value)


@attrs.frozen
class Data:
    data: bytes


@attrs.frozen
class CarrierLost:
    line: str


@attrs.frozen
class Noise:
    data: bytes
    reason: str


Output = Transmit | Deadline | Response | TimedOut | Unsolicited | Data | CarrierLost | Noise


def split_params(value: str) -> tuple[str, ...]:
    """``'"SM",3'`` -> ``("SM", "3")``: comma-separated parameters, quotes removed, commas
    inside quotes kept."""
    if not value.strip():
        return ()
    params: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            params.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    params.append("".join(current).strip())
    return tuple(params)


def basic_commands(text: str) -> list[str]:
    """The basic (V.250 5.3) commands at the start of a command line: ``"ATE0V1&C1"`` ->
    ``["E0", "V1", "&C1"]``. Stops at an extended command (+, ^, ...) or a dial command."""
    t = text.strip().upper()
    if not t.startswith("AT"):
        return []
    found: list[str] = []
    i = 2
    while i < len(t):
        if t[i] == " ":
            i += 1
            continue
        m = _BASIC.match(t, i)
        if m is None or t[i] == "D":
            break
        found.append(m.group(0))
        i = m.end()
    return found


def format_result(
    code: ResultCode, *, verbose: bool = True, detail: str | None = None,
    error: int | None = None,
) -> bytes:
    """A final result code as a modem sends it (V.250 5.7.1): ``\\r\\nCONNECT 9600\\r\\n`` when
    verbose, ``1\\r`` numeric; +CME/+CMS ERROR are always verbose."""
    if code in (ResultCode.CME_ERROR, ResultCode.CMS_ERROR):
        text = f"{code.value}: {error if error is not None else detail or ''}"
        return f"\r\n{text}\r\n".encode("latin-1")
    if verbose:
        text = code.value if not detail else f"{code.value} {detail}"
        return f"\r\n{text}\r\n".encode("latin-1")
    number = NUMERIC_OF[code]
    if code is ResultCode.CONNECT and detail:
        for n, (c, d) in NUMERIC_RESULTS.items():
            if c is code and d == detail:
                number = n
    return f"{number}\r".encode("ascii")


def format_info(line: str, *, verbose: bool = True) -> bytes:
    """An information line as a modem sends it (V.250 5.7.1)."""
    head = "\r\n" if verbose else ""
    return f"{head}{line}\r\n".encode("latin-1")


class AtEngine:
    """The command/response state machine of one modem (see the module docstring)."""

    def __init__(
        self,
        *,
        echo: bool = True,
        verbose: bool = True,
        numeric_results: Mapping[int, tuple[ResultCode, str | None]] = NUMERIC_RESULTS,
        urc_names: Iterable[str] = URC_NAMES,
        max_line: int = MAX_LINE,
    ) -> None:
        self.echo = echo
        self.verbose = verbose
        self.numeric_results = dict(numeric_results)
        self.urc_names = frozenset(name.upper() for name in urc_names)
        self.max_line = max_line
        self.state = State.IDLE
        # Bytes counted as noise (nothing claimed them).
        self.noise = 0
        self._queue: deque[Command] = deque()
        self._current: Command | None = None
        self._lines: list[str] = []
        self._answered = False
        self._buffer = bytearray()
        self._urc_header: Unsolicited | None = None
        self._tail = b""
        self._skip_lf = False

    # -- queries

    @property
    def current(self) -> Command | None:
        """The command in progress (``ESCAPE`` while escaping)."""
        return self._current

    @property
    def pending(self) -> int:
        """Commands queued behind the current one."""
        return len(self._queue)

    @property
    def online(self) -> bool:
        return self.state in (State.ONLINE, State.ESCAPING)

    # -- inputs

    def submit(self, command: Command) -> list[Output]:
        """Queue a command; it is sent at once when the modem is idle in command mode."""
        self._queue.append(command)
        if self.state is State.IDLE:
            return self._next()
        return []

    def receive(self, data: bytes) -> list[Output]:
        """Bytes from the modem -> outputs. Never raises on any input."""
        if self.online:
            return self._online(bytes(data))
        self._buffer += data
        return self._process()

    def expire(self) -> list[Output]:
        """The deadline of the current command passed."""
        command = self._current
        if command is None:
            return []
        if self.state is State.COMMAND and command.final_optional is not None and self._lines:
            return self._finish(FinalResult(ResultCode.OK, "", implied=True))
        out: list[Output] = [
            TimedOut(command, tuple(self._lines), body_sent=self.state is State.BODY)
        ]
        if self.state is State.ESCAPING:
            self.state = State.ONLINE
            self._current = None
            out.append(Deadline(None))
            return out
        if self.state in (State.PROMPT, State.BODY):
            out.insert(0, Transmit(ESC))
        self._end_command()
        out += self._next()
        return out

    def escape(self, timeout: float = ESCAPE.timeout) -> list[Output]:
        """Online -> send ``+++`` (the caller has kept the guard time since the last byte it
        wrote and keeps it after); the OK ends the pseudo-command ``ESCAPE``."""
        if self.state is not State.ONLINE:
            raise ChannelError(f"escape sequence while {self.state.value}, not online")
        self.state = State.ESCAPING
        self._current = attrs.evolve(ESCAPE, timeout=timeout)
        self._lines = []
        self._tail = b""
        return [Transmit(b"+++"), Deadline(timeout)]

    def carrier_lost(self, reason: str = "carrier detect dropped") -> list[Output]:
        """The adapter saw the carrier go (DCD, or the line closed) while online."""
        if not self.online:
            return []
        out: list[Output] = []
        if self.state is State.ESCAPING and self._current is not None:
            out.append(Response(self._current, FinalResult(ResultCode.NO_CARRIER, reason)))
        else:
            out.append(CarrierLost(reason))
        self.state = State.IDLE
        self._current = None
        self._tail = b""
        out += self._next()
        return out

    def reset(self) -> list[Command]:
        """Forget everything (the modem was reset or the port reopened); returns the commands
        in progress and queued, which will have no answer."""
        dropped = [] if self._current is None else [self._current]
        dropped += list(self._queue)
        self._queue.clear()
        self._end_command()
        self._buffer.clear()
        self._tail = b""
        self._urc_header = None
        self._skip_lf = False
        return dropped

    # -- command mode

    def _next(self) -> list[Output]:
        if not self._queue:
            return [Deadline(None)]
        command = self._queue.popleft()
        self._current = command
        self._lines = []
        self._answered = False
        self.state = State.COMMAND if command.body is None else State.PROMPT
        return [Transmit(command.encode()), Deadline(command.timeout)]

    def _end_command(self) -> None:
        self._current = None
        self._lines = []
        self._answered = False
        self.state = State.IDLE

    def _process(self) -> list[Output]:
        out: list[Output] = []
        buf = self._buffer
        while buf:
            if self.state is State.PROMPT:
                stripped = buf.lstrip(b"\r\n")
                if stripped[:1] == b">":
                    cut = len(buf) - len(stripped) + 1
                    if stripped[1:2] == b" ":
                        cut += 1
                    del buf[:cut]
                    assert self._current is not None and self._current.body is not None
                    self.state = State.BODY
                    out.append(Transmit(self._current.body + CTRL_Z))
                    continue
            ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
            if not ends:
                if len(buf) > self.max_line:
                    out.append(self._noise(bytes(buf), "line too long"))
                    buf.clear()
                break
            end = min(ends)
            raw = bytes(buf[:end])
            cut = end + 1
            if buf[end:end + 2] == b"\r\n":
                cut += 1
            del buf[:cut]
            if len(raw) > self.max_line:
                out.append(self._noise(raw, "line too long"))
                continue
            text = raw.decode("latin-1")
            if not text.strip():
                continue
            out += self._line(text)
            if self.online:
                if buf:
                    rest = bytes(buf)
                    buf.clear()
                    out += self._online(rest)
                break
        return out

    def _line(self, text: str) -> list[Output]:
        stripped = text.strip()
        if self._urc_header is not None:
            header, self._urc_header = self._urc_header, None
            return [attrs.evolve(header, body=text)]
        command = self._current
        if command is not None:
            if not self._answered and stripped.upper() == command.text.strip().upper():
                return []  # echo
            if self.state is State.BODY and not self._answered and self._body_echo(text):
                return []
            final = self._final(stripped, command)
            if final is not None:
                return self._finish(final)
        urc = self._unsolicited(stripped, command)
        if urc is not None:
            if urc.name.upper() in _TWO_LINE or (
                urc.name.upper() == "+CDS" and urc.value.strip().isdigit()
            ):
                self._urc_header = urc
                return []
            return [urc]
        if command is not None:
            first = not self._answered
            self._answered = True
            self._lines.append(text)
            if command.final_optional is not None and self.state is State.COMMAND:
                if command.final_optional == 0:
                    return self._finish(FinalResult(ResultCode.OK, "", implied=True))
                if first:
                    return [Deadline(command.final_optional)]
            return []
        return [self._noise(text.encode("latin-1"), "line outside any command")]

    def _body_echo(self, text: str) -> bool:
        assert self._current is not None and self._current.body is not None
        if "\x1a" in text:
            return True
        body = self._current.body.decode("latin-1")
        candidate = text.lstrip("> ").rstrip()
        return bool(candidate) and candidate in body

    def _final(self, line: str, command: Command) -> FinalResult | None:
        upper = line.upper()
        word = _ERROR_WORDS.get(upper)
        if word is not None:
            return FinalResult(word, line)
        m = _CONNECT.fullmatch(line)
        if m is not None:
            detail = (m.group(1) or "").strip() or None
            return FinalResult(ResultCode.CONNECT, line, detail)
        m = _EXTENDED_ERROR.fullmatch(line)
        if m is not None:
            kind = ResultCode.CME_ERROR if m.group(1).upper() == "CME" else ResultCode.CMS_ERROR
            detail = m.group(2).strip()
            if detail.isdigit() and detail.isascii():
                return FinalResult(kind, line, detail, int(detail))
            lookup = cme_code if kind is ResultCode.CME_ERROR else cms_code
            return FinalResult(kind, line, detail, lookup(detail))
        if (
            line.isdigit() and line.isascii() and len(line) <= 3
            and (not self.verbose or any(b[0] == "V" for b in basic_commands(command.text)))
        ):
            entry = self.numeric_results.get(int(line))
            if entry is not None and entry[0] is not ResultCode.RING:
                return FinalResult(entry[0], line, entry[1])
        return None

    def _finish(self, final: FinalResult) -> list[Output]:
        command = self._current
        assert command is not None
        out: list[Output] = [Response(command, final, tuple(self._lines))]
        if final.code is ResultCode.OK:
            self._follow(command)
        self._end_command()
        if final.code is ResultCode.CONNECT:
            self.state = State.ONLINE
            self._tail = b""
            self._skip_lf = True
            out.append(Deadline(None))
            return out
        out += self._next()
        return out

    def _follow(self, command: Command) -> None:
        """Track echo and verbose settings the modem accepted."""
        for basic in basic_commands(command.text):
            if basic in ("Z", "&F") or (basic[0] == "Z") or basic.startswith("&F"):
                self.echo, self.verbose = True, True
            elif basic[0] == "E":
                self.echo = basic[1:] not in ("", "0")
            elif basic[0] == "V":
                self.verbose = basic[1:] not in ("", "0")

    def _unsolicited(self, line: str, command: Command | None) -> Unsolicited | None:
        name, colon, value = line.partition(":")
        name = name.strip() if colon else line
        key = name.upper()
        if key not in self.urc_names or (key[:1] in "+^" and not colon):
            return None  # +X/^X codes always have a colon (a bare "^BOOT" is a +CLAC line)
        if (
            command is not None
            and key[:1] in "+^"
            and re.search(re.escape(key) + r"(?![A-Z])", command.text.upper())
        ):
            return None  # the command's own answer (AT+CREG? -> +CREG: 0,1)
        return Unsolicited(name, value.strip(), line)

    def _noise(self, data: bytes, reason: str) -> Noise:
        self.noise += len(data)
        return Noise(data, reason)

    # -- online

    def _online(self, data: bytes) -> list[Output]:
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return []
        window = self._tail + data
        m = _ONLINE_NO_CARRIER.search(window)
        if self.state is State.ESCAPING:
            pattern = _ESCAPE_OK if self.verbose else _ESCAPE_OK_NUMERIC
            ok = pattern.search(window)
            if ok is not None and (m is None or ok.start() < m.start()):
                m = ok
        if m is None:
            self._tail = window[-_SCAN_TAIL:]
            return [Data(data)]
        before = data[: max(0, m.start() - len(self._tail))]
        after = window[m.end():]
        line = m.group(0).strip().decode("latin-1")
        out: list[Output] = [Data(before)] if before else []
        self._tail = b""
        if self.state is State.ESCAPING and self._current is not None:
            code = ResultCode.NO_CARRIER if b"NO CARRIER" in m.group(0) else ResultCode.OK
            out.append(Response(self._current, FinalResult(code, line)))
        else:
            out.append(CarrierLost(line))
        self._end_command()
        self._buffer = bytearray(after.lstrip(b"\n"))
        out += self._process()
        if self.state is State.IDLE:
            out += self._next()
        return out


@attrs.frozen
class ModemProfile:
    """How to set up one modem model: its init commands (sent in order after opening the
    port), the numeric result table, and default timeouts."""

    name: str
    init: tuple[str, ...]
    description: str = ""
    command_timeout: float = 5.0
    dial_timeout: float = 60.0
    numeric_results: Mapping[int, tuple[ResultCode, str | None]] = NUMERIC_RESULTS

    def init_commands(self) -> list[Command]:
        return [Command(text, self.command_timeout) for text in self.init]

    def engine(self) -> AtEngine:
        return AtEngine(numeric_results=self.numeric_results)


# Z: stored profile; E0 echo off; V1 verbose; Q0 result codes on; X4 report BUSY and NO
# DIALTONE; &C1 DCD follows the carrier; &D2 DTR drop hangs up; S0=0 never auto-answer.
PROFILES: Final[Mapping[str, ModemProfile]] = {
    p.name: p
    for p in (
        ModemProfile(
            "generic",
            ("ATZ", "ATE0V1Q0X4", "AT&C1&D2", "ATS0=0"),
            "any V.250 (Hayes) PSTN modem",
        ),
        ModemProfile(
            "usrobotics",
            ("ATZ", "ATE0V1Q0X4", "AT&C1&D2", "ATS0=0", "AT&K0"),
            "US Robotics/3Com Courier and Sportster: no flow control towards the meter",
        ),
        ModemProfile(
            "gsm-csd",
            ("ATZ", "ATE0V1Q0", "AT+CMEE=1", "AT&C1&D2", "AT+CBST=7,0,1"),
            "GSM modem making circuit-switched data calls (9600 bit/s V.32, non-transparent)",
        ),
        ModemProfile(
            "huawei",
            ("ATZ", "ATE0V1Q0", "AT+CMEE=1", "AT^CURC=0"),
            "Huawei GSM/UMTS modems: ^RSSI/^BOOT/^MODE reports switched off",
        ),
        ModemProfile(
            "siemens",
            ("ATZ", "ATE0V1Q0", "AT+CMEE=1", "AT&C1&D2", "AT+CBST=7,0,1", "AT\\Q0"),
            "Siemens/Cinterion MC35, TC35: CSD 9600, no flow control",
        ),
    )
}


def modem_profile(name: str, init: Iterable[str] | None = None) -> ModemProfile:
    """The profile of a modem model, its init strings replaced when ``init`` is given."""
    try:
        profile = PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown modem model {name!r} (known: {known})", key="model")
    if init is not None:
        commands = tuple(text.strip() for text in init if text.strip())
        for text in commands:
            try:
                Command(text)
            except ValueError as e:
                raise ConfigError(str(e), key="init")
        profile = attrs.evolve(profile, init=commands)
    return profile
