"""Telnet with the Com Port Control option (RFC 854/855, RFC 2217), client side, sans-IO:
how fep drives a serial port on an Ethernet serial server.

``TelnetDecoder`` turns received bytes into data and telnet commands (IAC escaping undone,
commands and subnegotiations split across reads put back together). ``Rfc2217Client`` is
the client's state machine: it offers COM-PORT-OPTION and binary transmission, answers the
server's option negotiation (refusing what it does not use, ECHO above all), sends the line
settings (SET-BAUDRATE, SET-DATASIZE, SET-PARITY, SET-STOPSIZE, SET-CONTROL) once the
server agrees and reports ``Ready`` when the server has acknowledged every one with the
value asked. Later speed changes (IEC 62056-21 mode C) are acknowledged the same way.
Nothing here does I/O: ``receive_data`` and the request methods return actions (``Send``,
``Received``, ...) for the Twisted adapter in fep.channels.serialserver.
"""

from __future__ import annotations

import enum

import attrs

from fep.channels.lines import LineSettings

# Telnet commands (RFC 854).
SE = 240
NOP = 241
DM = 242
BRK = 243
GA = 249
SB = 250
WILL = 251
WONT = 252
DO = 253
DONT = 254
IAC = 255

# Telnet options.
BINARY = 0  # RFC 856
ECHO = 1  # RFC 857
SGA = 3  # RFC 858
COM_PORT_OPTION = 44  # RFC 2217

# Longest subnegotiation accepted (a signature text is the longest there is).
MAX_SUBNEGOTIATION = 512

VERB_NAMES = {WILL: "WILL", WONT: "WONT", DO: "DO", DONT: "DONT"}


class ComPortCommand(enum.IntEnum):
    """RFC 2217 commands, client to server; the server answers with the code + 100."""

    SIGNATURE = 0
    SET_BAUDRATE = 1
    SET_DATASIZE = 2
    SET_PARITY = 3
    SET_STOPSIZE = 4
    SET_CONTROL = 5
    NOTIFY_LINESTATE = 6
    NOTIFY_MODEMSTATE = 7
    FLOWCONTROL_SUSPEND = 8
    FLOWCONTROL_RESUME = 9
    SET_LINESTATE_MASK = 10
    SET_MODEMSTATE_MASK = 11
    PURGE_DATA = 12


SERVER_OFFSET = 100

# Value bytes of each RFC 2217 command (either way; the server's code is the command's + 100);
# the signature's text has no fixed length.
COM_PORT_VALUE_LENGTHS: dict[int, int] = {
    ComPortCommand.SET_BAUDRATE: 4,
    ComPortCommand.SET_DATASIZE: 1,
    ComPortCommand.SET_PARITY: 1,
    ComPortCommand.SET_STOPSIZE: 1,
    ComPortCommand.SET_CONTROL: 1,
    ComPortCommand.NOTIFY_LINESTATE: 1,
    ComPortCommand.NOTIFY_MODEMSTATE: 1,
    ComPortCommand.FLOWCONTROL_SUSPEND: 0,
    ComPortCommand.FLOWCONTROL_RESUME: 0,
    ComPortCommand.SET_LINESTATE_MASK: 1,
    ComPortCommand.SET_MODEMSTATE_MASK: 1,
    ComPortCommand.PURGE_DATA: 1,
}

PARITY_CODES = {"N": 1, "O": 2, "E": 3, "M": 4, "S": 5}
STOPSIZE_CODES = {1: 1, 2: 2, 1.5: 3}
# SET-CONTROL values for outbound flow control.
FLOW_NONE = 1
FLOW_XONXOFF = 2
FLOW_HARDWARE = 3

# What each setting is called in routes and errors.
SETTING_NAMES = {
    ComPortCommand.SET_BAUDRATE: "baudrate",
    ComPortCommand.SET_DATASIZE: "bytesize",
    ComPortCommand.SET_PARITY: "parity",
    ComPortCommand.SET_STOPSIZE: "stopbits",
    ComPortCommand.SET_CONTROL: "flow control",
}

SIGNATURE = b"fep"


def escape(data: bytes) -> bytes:
    """Data as it goes over telnet: every 0xFF byte doubled."""
    return data.replace(b"\xff", b"\xff\xff")


def negotiation(verb: int, option: int) -> bytes:
    return bytes((IAC, verb, option))


def subnegotiation(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + escape(payload) + bytes((IAC, SE))


def com_port(command: int, value: bytes) -> bytes:
    """``IAC SB COM-PORT-OPTION command value IAC SE``."""
    return subnegotiation(COM_PORT_OPTION, bytes((command,)) + value)


# -- decoded telnet -------------------------------------------------------------------------


@attrs.frozen
class Data:
    data: bytes


@attrs.frozen
class Negotiation:
    verb: int
    option: int


@attrs.frozen
class Subnegotiation:
    option: int
    payload: bytes


@attrs.frozen
class Command:
    """A telnet command without an option (NOP, DM, BRK, GA, ...)."""

    code: int


@attrs.frozen
class BrokenSubnegotiation:
    """A subnegotiation given up (no IAC SE within its bound, or another command inside):
    what it held so far, and why."""

    option: int
    payload: bytes
    why: str


TelnetEvent = Data | Negotiation | Subnegotiation | Command | BrokenSubnegotiation


class _In(enum.Enum):
    DATA = "data"
    IAC = "iac"
    VERB = "verb"
    SB_OPTION = "sb option"
    SB = "sb"
    SB_IAC = "sb iac"
    CR = "cr"


class TelnetDecoder:
    """Received telnet bytes -> events. With ``binary`` off (the server did not agree to
    send binary), CR NUL is CR, as RFC 854 has it.

    A subnegotiation is bounded: an RFC 2217 one by the length its command has (4 value
    bytes for a speed, 1 for a data size, none for a flow-control request, ...), any other
    (a signature, another option) by MAX_SUBNEGOTIATION. One that does not end with IAC SE
    within its bound, or that an IAC with another command breaks, is given up
    (``BrokenSubnegotiation``, counted in ``broken``) and what follows is read as it would
    be outside: data as data, the command that broke it as a command (as BSD telnet does),
    never swallowed."""

    def __init__(self) -> None:
        self.binary = False
        self._state = _In.DATA
        self._verb = 0
        self._option = 0
        self._sb = bytearray()
        self._limit = MAX_SUBNEGOTIATION
        self.ignored = 0
        self.broken = 0

    def receive(self, data: bytes) -> list[TelnetEvent]:
        events: list[TelnetEvent] = []
        out = bytearray()

        def flush() -> None:
            if out:
                events.append(Data(bytes(out)))
                out.clear()

        def give_up(why: str) -> None:
            flush()
            self.broken += 1
            events.append(BrokenSubnegotiation(self._option, bytes(self._sb), why))
            self._sb.clear()

        for byte in data:
            state = self._state
            if state is _In.CR:
                self._state = _In.DATA
                if byte == 0:
                    continue  # CR NUL: the CR is already out
                state = _In.DATA
            elif state is _In.SB:
                if byte == IAC:
                    self._state = _In.SB_IAC
                    continue
                if len(self._sb) < self._sb_limit():
                    self._sb.append(byte)
                    continue
                give_up(f"no IAC SE after {len(self._sb)} bytes")
                state = self._state = _In.DATA  # the byte is data
            elif state is _In.SB_IAC:
                if byte == SE:
                    flush()
                    events.append(Subnegotiation(self._option, bytes(self._sb)))
                    self._sb.clear()
                    self._state = _In.DATA
                    continue
                if byte == IAC and len(self._sb) < self._sb_limit():
                    self._sb.append(IAC)
                    self._state = _In.SB
                    continue
                give_up(f"broken by IAC {byte}" if byte != IAC else
                        f"no IAC SE after {len(self._sb)} bytes")
                state = self._state = _In.IAC  # IAC IAC is data, IAC WILL a negotiation, ...
            elif state is _In.SB_OPTION:
                self._option = byte
                self._sb.clear()
                self._state = _In.SB
                continue
            if state is _In.DATA:
                if byte == IAC:
                    self._state = _In.IAC
                else:
                    out.append(byte)
                    if byte == 0x0D and not self.binary:
                        self._state = _In.CR
            elif state is _In.IAC:
                if byte == IAC:
                    out.append(IAC)
                    self._state = _In.DATA
                elif byte in VERB_NAMES:
                    self._verb = byte
                    self._state = _In.VERB
                elif byte == SB:
                    self._state = _In.SB_OPTION
                else:
                    flush()
                    if byte < SE:
                        self.ignored += 1  # not a command: RFC 854 leaves it undefined
                    else:
                        events.append(Command(byte))
                    self._state = _In.DATA
            elif state is _In.VERB:
                flush()
                events.append(Negotiation(self._verb, byte))
                self._state = _In.DATA
        flush()
        return events

    def _sb_limit(self) -> int:
        """The most payload bytes the subnegotiation under way may have: its command's
        length for RFC 2217 (known once its first byte is in), else MAX_SUBNEGOTIATION."""
        if self._option != COM_PORT_OPTION or not self._sb:
            return MAX_SUBNEGOTIATION
        value = COM_PORT_VALUE_LENGTHS.get(self._sb[0] % SERVER_OFFSET
                                           if self._sb[0] >= SERVER_OFFSET else self._sb[0])
        return MAX_SUBNEGOTIATION if value is None else 1 + value


# -- the RFC 2217 client -------------------------------------------------------------------


@attrs.frozen
class Send:
    """Bytes to write to the server."""

    data: bytes


@attrs.frozen
class Received:
    """Serial data from the far side of the server."""

    data: bytes


@attrs.frozen
class Ready:
    """The server runs RFC 2217 and has acknowledged every line setting asked."""


@attrs.frozen
class Acknowledged:
    """The server acknowledged a setting with the value asked (``setting`` as in routes)."""

    setting: str
    value: int | float | str


@attrs.frozen
class SettingRefused:
    """The server set another value than the one asked (e.g. a speed it cannot do)."""

    setting: str
    asked: int | float | str
    got: int | float | str | None


@attrs.frozen
class Refused:
    """The server will not do RFC 2217 (or stopped doing it)."""

    why: str


@attrs.frozen
class Notified:
    """A line or modem state notification, or flow-control request, from the server."""

    command: int
    value: bytes


@attrs.frozen
class BadTelnet:
    """The server broke the telnet rules (a subnegotiation given up); the bytes around it
    were read on (fep.channels.serialserver logs it)."""

    why: str


Action = (Send | Received | Ready | Acknowledged | SettingRefused | Refused | Notified
          | BadTelnet)


class _Q(enum.Enum):
    NO = "no"
    YES = "yes"
    WANT_YES = "want yes"
    WANT_NO = "want no"


def _decode_value(command: int, value: bytes) -> int | float | str | None:
    """A server acknowledgement's value in route terms (None when it cannot be read)."""
    if command == ComPortCommand.SET_BAUDRATE:
        return int.from_bytes(value, "big") if len(value) == 4 else None
    if len(value) != 1:
        return None
    code = value[0]
    if command == ComPortCommand.SET_DATASIZE:
        return code
    if command == ComPortCommand.SET_PARITY:
        return next((p for p, c in PARITY_CODES.items() if c == code), None)
    if command == ComPortCommand.SET_STOPSIZE:
        return next((s for s, c in STOPSIZE_CODES.items() if c == code), None)
    return code


def _encode_value(command: int, value: int | float | str) -> bytes:
    if command == ComPortCommand.SET_BAUDRATE:
        return int(value).to_bytes(4, "big")
    if command == ComPortCommand.SET_PARITY:
        return bytes((PARITY_CODES[str(value)],))
    if command == ComPortCommand.SET_STOPSIZE:
        return bytes((STOPSIZE_CODES[float(value)],))
    return bytes((int(value),))


class Rfc2217Client:
    """The client end of a telnet session with an RFC 2217 serial server.

    ``start()`` gives the opening negotiation; ``receive_data()`` the actions for bytes from
    the server; ``encode(data)`` the bytes that carry serial data; ``set_baudrate()`` the
    request for a new speed. Options: we do BINARY, SGA and COM-PORT-OPTION, we accept the
    server's BINARY and SGA, and refuse everything else (ECHO in particular: a server that
    echoed our requests would garble every meter session).
    """

    OURS = frozenset({BINARY, SGA, COM_PORT_OPTION})
    THEIRS = frozenset({BINARY, SGA})

    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        self.decoder = TelnetDecoder()
        self._us: dict[int, _Q] = {}
        self._him: dict[int, _Q] = {}
        # Settings sent and not yet acknowledged: command -> value asked (in order).
        self._awaiting: dict[int, int | float | str] = {}
        self.ready = False
        self.refused = False
        self.acknowledged: dict[str, int | float | str] = {}
        self.notifications = 0

    # -- state of options -------------------------------------------------------------------

    def us(self, option: int) -> bool:
        """Whether we do ``option`` (WILL agreed)."""
        return self._us.get(option, _Q.NO) is _Q.YES

    def him(self, option: int) -> bool:
        """Whether the server does ``option`` (DO agreed)."""
        return self._him.get(option, _Q.NO) is _Q.YES

    @property
    def binary_out(self) -> bool:
        return self.us(BINARY)

    # -- requests ---------------------------------------------------------------------------

    def start(self) -> bytes:
        """The opening negotiation: we will do COM-PORT-OPTION and binary, and ask the
        server to send binary and suppress go-ahead."""
        out = bytearray()
        for option in (COM_PORT_OPTION, BINARY):
            self._us[option] = _Q.WANT_YES
            out += negotiation(WILL, option)
        for option in (BINARY, SGA):
            self._him[option] = _Q.WANT_YES
            out += negotiation(DO, option)
        return bytes(out)

    def encode(self, data: bytes) -> bytes:
        """Serial data as it goes to the server."""
        out = escape(data)
        if not self.binary_out:
            out = out.replace(b"\r", b"\r\x00")
        return out

    def set_baudrate(self, baudrate: int) -> bytes:
        """The request for a new speed; ``Acknowledged('baudrate', ...)`` follows."""
        if baudrate <= 0:
            raise ValueError(f"bad baudrate {baudrate}")
        return self._request(ComPortCommand.SET_BAUDRATE, baudrate)

    def _request(self, command: int, value: int | float | str) -> bytes:
        self._awaiting[command] = value
        return com_port(command, _encode_value(command, value))

    def _line_settings(self) -> bytes:
        """The line settings asked of the server (as a ``serial:`` route has them)."""
        s = self.settings
        # RFC 2217's recommended order: speed, data size, parity, stop size.
        return b"".join(
            (
                self._request(ComPortCommand.SET_BAUDRATE, s.baudrate),
                self._request(ComPortCommand.SET_DATASIZE, s.bytesize),
                self._request(ComPortCommand.SET_PARITY, s.parity),
                self._request(ComPortCommand.SET_STOPSIZE, s.stopbits),
                self._request(ComPortCommand.SET_CONTROL, _flow(s)),
            )
        )

    # -- what the server sends --------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Action]:
        """Actions for ``data`` from the server (``BadTelnet`` for a broken subnegotiation,
        the data after it kept)."""
        self.decoder.binary = self.him(BINARY)
        actions: list[Action] = []
        for event in self.decoder.receive(data):
            if isinstance(event, Data):
                actions.append(Received(event.data))
            elif isinstance(event, Negotiation):
                actions += self._negotiate(event.verb, event.option)
                self.decoder.binary = self.him(BINARY)
            elif isinstance(event, Subnegotiation):
                actions += self._subnegotiation(event)
            elif isinstance(event, BrokenSubnegotiation):
                actions.append(BadTelnet(f"telnet subnegotiation of option {event.option} "
                                         f"given up: {event.why}"))
        return actions

    def _negotiate(self, verb: int, option: int) -> list[Action]:
        if verb in (WILL, WONT):
            table, supported, yes, no = self._him, self.THEIRS, DO, DONT
        else:
            table, supported, yes, no = self._us, self.OURS, WILL, WONT
        state = table.get(option, _Q.NO)
        out: list[Action] = []
        if verb in (WILL, DO):
            if state is _Q.NO:
                if option in supported:
                    table[option] = _Q.YES
                    out.append(Send(negotiation(yes, option)))
                else:
                    out.append(Send(negotiation(no, option)))
            elif state is _Q.WANT_YES:
                table[option] = _Q.YES
            elif state is _Q.WANT_NO:
                table[option] = _Q.NO  # RFC 1143: an answer to our request to stop, refused
        else:  # WONT, DONT
            if state is _Q.YES:
                table[option] = _Q.NO
                out.append(Send(negotiation(no, option)))
            elif state in (_Q.WANT_YES, _Q.WANT_NO):
                table[option] = _Q.NO
        if option == COM_PORT_OPTION and verb in (DO, DONT):
            out += self._com_port_state()
        return out

    def _com_port_state(self) -> list[Action]:
        if self.us(COM_PORT_OPTION):
            if not self.ready and not self._awaiting:
                return [Send(self._line_settings())]
            return []
        if not self.refused:
            self.refused = True
            return [Refused("the serial server refuses the Com Port Control option (RFC 2217)")]
        return []

    def _subnegotiation(self, event: Subnegotiation) -> list[Action]:
        if event.option != COM_PORT_OPTION or not event.payload:
            return []
        code, value = event.payload[0] - SERVER_OFFSET, event.payload[1:]
        if code == ComPortCommand.SIGNATURE:
            if value:
                return []  # the server's signature: nothing to do with it
            return [Send(com_port(ComPortCommand.SIGNATURE, SIGNATURE))]
        if code in (ComPortCommand.NOTIFY_LINESTATE, ComPortCommand.NOTIFY_MODEMSTATE,
                    ComPortCommand.FLOWCONTROL_SUSPEND, ComPortCommand.FLOWCONTROL_RESUME):
            self.notifications += 1
            return [Notified(code, value)]
        if code not in self._awaiting:
            return []  # an acknowledgement of something not asked (or asked again): no news
        asked = self._awaiting.pop(code)
        got = _decode_value(code, value)
        name = SETTING_NAMES.get(ComPortCommand(code), str(code))
        actions: list[Action]
        if got != asked:
            actions = [SettingRefused(name, asked, got)]
        else:
            self.acknowledged[name] = got
            actions = [Acknowledged(name, got)]
        if not self.ready and not self._awaiting and got == asked:
            self.ready = True
            actions.append(Ready())
        return actions


def _flow(settings: LineSettings) -> int:
    """The SET-CONTROL value for the line's outbound flow control."""
    if settings.rtscts:
        return FLOW_HARDWARE
    return FLOW_XONXOFF if settings.xonxoff else FLOW_NONE
