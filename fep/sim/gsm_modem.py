"""A simulated GSM modem with an SMS store, and the scriptable network behind it.

The modem answers AT commands as a 3GPP TS 27.007/27.005 modem does, over a pty or any byte
pipe: identification and network queries (AT+CGMI, +CGMM, +CGMR, +CGSN, +CIMI, +CNUM, +CPIN,
+CFUN, +CREG, +CSQ, +COPS, +CLAC ...), SMS in PDU and text mode (AT+CMGF, +CSCS, +CSMP,
+CSDH, +CSCA), sending with AT+CMGS after the ``> `` prompt, the message store (AT+CPMS,
+CMGR, +CMGL, +CMGD) with a capacity and the storage-full indication (+CIEV with AT+CMER),
new-message indications as AT+CNMI asks (+CMTI, +CMT, +CDS, +CDSI), delivery reports, echo
(ATE), verbose/numeric result codes (ATV), quiet mode (ATQ) and error reporting (AT+CMEE).

The network (``GsmNetwork``) delivers messages to modems by number (``deliver``), records
every message a modem sends (``sent`` per part, ``messages`` joined), answers with delivery
reports, and routes sent messages to simulated field devices (``SimulatedFieldDevice``) that
reply with status or alarm texts and run a hook when their wake-up text arrives.

``python -m fep.sim.gsm_modem --pty /dev/pts/7 --number +491700000001``
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from fep.channels.modem.pdu import (
    Address,
    Alphabet,
    Deliver,
    Direction,
    Message,
    Reassembler,
    StatusReport,
    Submit,
    Tpdu,
    UserData,
    data_coding,
    decode_pdu,
    decode_user_data,
    encode_pdu,
    encode_user_data,
    gsm7_decode,
    gsm7_encode,
    relative_validity,
    submit_parts,
    user_data_size,
)
from fep.errors import FrameError
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.gsm_modem")

CTRL_Z = 0x1A
ESC = 0x1B

STAT_TEXT = ("REC UNREAD", "REC READ", "STO UNSENT", "STO SENT", "ALL")

# 27.005 3.2.5 +CMS ERROR and 27.007 9.2 +CME ERROR codes the emulator gives.
CMS_ME_FAILURE = 300
CMS_NOT_ALLOWED = 302
CMS_NOT_SUPPORTED = 303
CMS_INVALID_PDU_PARAMETER = 304
CMS_INVALID_TEXT_PARAMETER = 305
CMS_SIM_PIN_REQUIRED = 311
CMS_INVALID_INDEX = 321
CMS_MEMORY_FULL = 322
CMS_SMSC_UNKNOWN = 330
CMS_NO_NETWORK = 331
CMS_UNKNOWN = 500
CME_NOT_ALLOWED = 3
CME_NOT_SUPPORTED = 4
CME_SIM_PIN_REQUIRED = 11
CME_INCORRECT_PASSWORD = 16
CME_INVALID_INDEX = 21
CME_INVALID_CHARACTERS = 25

_CMS_TEXT = {
    300: "ME failure",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    311: "SIM PIN required",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    500: "unknown error",
}
_CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    11: "SIM PIN required",
    16: "incorrect password",
    21: "invalid index",
    25: "invalid characters in text string",
}

# What AT+CLAC lists (and so what clients that probe for vendor commands will find).
SUPPORTED = (
    "+CGMI", "+CGMM", "+CGMR", "+CGSN", "+CIMI", "+CNUM", "+CPIN", "+CFUN", "+CREG", "+CSQ",
    "+COPS", "+CMEE", "+CMER", "+CIND", "+CLAC", "+CMGF", "+CSCS", "+CSCA", "+CSMP", "+CSDH",
    "+CSMS", "+CPMS", "+CNMI", "+CMGS", "+CMGR", "+CMGL", "+CMGD", "+CLIP", "+CRC", "+CVHU",
    "+GMI", "+GMM", "+GMR", "+GSN",
)  # fmt: skip
# Settings accepted and otherwise ignored (no voice calls, no data here).
_ACCEPTED = frozenset({"+CLIP", "+CRC", "+CVHU", "+CGREG", "+CSCB", "+CMGW"})
_CHARSETS = ("GSM", "IRA", "8859-1", "UCS2")


class AtError(Exception):
    """A command failed: ``cms`` or ``cme`` is its error number (plain ERROR when neither)."""

    def __init__(self, *, cms: int | None = None, cme: int | None = None) -> None:
        self.cms = cms
        self.cme = cme
        super().__init__(f"CMS {cms}" if cms is not None else f"CME {cme}")


def _params(text: str) -> list[str]:
    """``'"SM","ME",3'`` -> ``['SM', 'ME', '3']`` (quotes removed, commas in quotes kept)."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            out.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    out.append("".join(current).strip())
    return out if text.strip() else []


def _int(text: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise AtError(cme=CME_NOT_ALLOWED)
    if not lo <= value <= hi:
        raise AtError(cme=CME_NOT_ALLOWED)
    return value


def text_timestamp(moment: datetime) -> str:
    """The text-mode form of a timestamp: ``yy/MM/dd,hh:mm:ss±zz`` (zone in quarter hours)."""
    offset = moment.utcoffset() or timedelta(0)
    quarters = int(offset.total_seconds()) // 900
    sign = "-" if quarters < 0 else "+"
    return moment.strftime("%y/%m/%d,%H:%M:%S") + f"{sign}{abs(quarters):02d}"


def te_encode(text: str, charset: str) -> str:
    """Text as the TE character set (AT+CSCS) carries it on the line (27.007 5.5)."""
    if charset == "UCS2":
        return text.encode("utf-16-be", "surrogatepass").hex().upper()
    if charset == "GSM":
        out = bytearray()
        for char in text:
            try:
                out += gsm7_encode(char)
            except ValueError:
                out += b"?"
        return out.decode("latin-1")
    if charset == "IRA":
        return "".join(c if ord(c) < 128 else "?" for c in text)
    return "".join(c if ord(c) < 256 else "?" for c in text)


def te_decode(wire: str, charset: str) -> str:
    """The inverse of ``te_encode``; AtError (CME 25) for what the set cannot carry."""
    if charset == "UCS2":
        try:
            return bytes.fromhex(wire).decode("utf-16-be")
        except ValueError:
            raise AtError(cme=CME_INVALID_CHARACTERS)
    if charset == "GSM":
        if any(ord(c) > 0x7F for c in wire):
            raise AtError(cme=CME_INVALID_CHARACTERS)
        return gsm7_decode(wire.encode("latin-1"))
    if charset == "IRA" and any(ord(c) > 0x7F for c in wire):
        raise AtError(cme=CME_INVALID_CHARACTERS)
    return wire


@attrs.define
class StoredSms:
    """One slot of the message store: a received SMS-DELIVER or SMS-STATUS-REPORT."""

    status: int  # 0 REC UNREAD, 1 REC READ, 2 STO UNSENT, 3 STO SENT
    tpdu: Tpdu | bytes  # bytes: a raw (perhaps corrupt) PDU put there by a test script


class SmsStore:
    """A message memory (``SM`` on the SIM, ``ME`` in the modem) of fixed capacity, slots
    numbered from 1."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.slots: dict[int, StoredSms] = {}

    @property
    def used(self) -> int:
        return len(self.slots)

    @property
    def full(self) -> bool:
        return self.used >= self.capacity

    def put(self, tpdu: Tpdu | bytes, status: int = 0) -> int | None:
        """Store in the lowest free slot; None when full."""
        for index in range(1, self.capacity + 1):
            if index not in self.slots:
                self.slots[index] = StoredSms(status, tpdu)
                return index
        return None


@attrs.frozen
class SentSms:
    """One SMS-SUBMIT a modem handed to the network."""

    sender: str
    destination: str
    submit: Submit
    reference: int
    at: datetime


@attrs.frozen
class SentMessage:
    """A whole message a modem sent (concatenated parts joined)."""

    sender: str
    destination: str
    text: str
    parts: tuple[SentSms, ...]


class GsmNetwork:
    """The simulated mobile network: modems by number, an SMSC, delivery reports, routes to
    field devices. Every delay runs on ``reactor`` (a Clock in unit tests)."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        smsc: str = "+491710760000",
        zone: timezone = UTC,
        clock: Callable[[], datetime] | None = None,
        delivery_delay: float = 0.0,
        report_delay: float = 0.0,
    ) -> None:
        self.reactor = reactor
        self.smsc = Address.parse(smsc)
        self.zone = zone
        self._clock = clock
        self.delivery_delay = delivery_delay
        self.report_delay = report_delay
        self.modems: dict[str, GsmModemEmulator] = {}
        self.routes: dict[str, Callable[[SentMessage], object]] = {}
        # Delivery status per destination for reports (TP-ST; 0 delivered).
        self.report_status: dict[str, int] = {}
        self.sent: list[SentSms] = []
        self.messages: list[SentMessage] = []
        self.pending: dict[str, list[Deliver]] = {}
        self.concat_reference = 0
        self._joiners: dict[str, Reassembler] = {}

    def now(self) -> datetime:
        moment = self._clock() if self._clock is not None else datetime.now(UTC)
        return moment.astimezone(self.zone).replace(microsecond=0)

    def attach(self, modem: GsmModemEmulator) -> None:
        self.modems[_key(modem.number)] = modem
        modem.network = self

    def route(self, number: str, handler: Callable[[SentMessage], object]) -> None:
        """Messages sent to ``number`` go to ``handler`` (a simulated field device)."""
        self.routes[_key(number)] = handler

    # -- towards modems

    def deliver(
        self,
        to: str,
        body: str | bytes,
        sender: str = "+491510000001",
        *,
        alphabet: Alphabet | None = None,
        message_class: int | None = None,
        wide_reference: bool = False,
    ) -> list[Deliver]:
        """Send a message from ``sender`` to the modem with number ``to``: one SMS-DELIVER,
        or concatenated parts for a long body. Fires after ``delivery_delay``."""
        self.concat_reference = (self.concat_reference + 1) & 0xFF
        submits = submit_parts(
            sender,
            body,
            reference=self.concat_reference,
            wide_reference=wide_reference,
            alphabet=alphabet,
            message_class=message_class,
        )
        origin = Address.parse(sender)
        moment = self.now()
        parts = [
            Deliver(
                origin,
                moment,
                s.user_data,
                dcs=s.dcs,
                more_messages=n < len(submits),
                smsc=self.smsc,
            )
            for n, s in enumerate(submits, 1)
        ]
        for part in parts:
            self.deliver_pdu(to, part)
        return parts

    def deliver_pdu(self, to: str, deliver: Deliver) -> None:
        """Deliver one SMS-DELIVER as given (after ``delivery_delay``)."""
        self.reactor.callLater(self.delivery_delay, self._arrive, _key(to), deliver)

    def _arrive(self, key: str, deliver: Deliver) -> None:
        modem = self.modems.get(key)
        if modem is None:
            log.warn("no modem with number {number}", number=key)
            return
        if self.pending.get(key) or not modem.receive_sms(deliver):
            # Memory capacity exceeded: the SMSC keeps it until the modem has room (SMMA).
            self.pending.setdefault(key, []).append(deliver)

    def pending_for(self, number: str) -> list[Deliver]:
        """Messages the SMSC holds for the modem ``number`` (its memory was full)."""
        return list(self.pending.get(_key(number), []))

    def memory_available(self, modem: GsmModemEmulator) -> None:
        """The modem freed memory: the SMSC retries what it holds for it, in order."""
        key = _key(modem.number)
        queue = self.pending.get(key, [])
        while queue and modem.receive_sms(queue[0]):
            queue.pop(0)

    # -- from modems

    def submit(self, modem: GsmModemEmulator, submit: Submit, reference: int) -> None:
        moment = self.now()
        destination = str(submit.destination)
        sms = SentSms(modem.number, destination, submit, reference, moment)
        self.sent.append(sms)
        log.info(
            "SMS from {sender} to {destination}: {body!r}",
            sender=modem.number,
            destination=destination,
            body=submit.user_data.body,
        )
        if submit.status_report:
            self.reactor.callLater(self.report_delay, self._report, modem, sms)
        joiner = self._joiners.setdefault(modem.number + ">" + destination, Reassembler())
        as_deliver = Deliver(Address.parse(modem.number), moment, submit.user_data, dcs=submit.dcs)
        whole: Message | None = joiner.add(as_deliver, 0.0)
        if whole is None:
            return
        parts = tuple(self.sent[-len(whole.parts) :])
        message = SentMessage(modem.number, destination, whole.text, parts)
        self.messages.append(message)
        handler = self.routes.get(_key(destination))
        if handler is not None:
            self.reactor.callLater(self.delivery_delay, handler, message)

    def _report(self, modem: GsmModemEmulator, sms: SentSms) -> None:
        status = next(
            (v for k, v in self.report_status.items() if _key(k) == _key(sms.destination)), 0
        )
        report = StatusReport(
            sms.reference,
            sms.submit.destination,
            sms.at,
            self.now(),
            status,
            smsc=self.smsc,
        )
        modem.receive_report(report)


def _key(number: str) -> str:
    return number.replace(" ", "").lstrip("+")


class GsmModemEmulator(Protocol):
    """One GSM modem on a byte pipe (see the module docstring for what it answers)."""

    def __init__(
        self,
        number: str = "+491700000001",
        *,
        capacity: int = 20,
        pin: str | None = None,
        manufacturer: str = "fep",
        model: str = "Simulated GSM modem",
        revision: str = "1.0",
        imei: str = "490154203237518",
        imsi: str = "262011234567890",
        signal: int = 20,
        registered: bool = True,
    ) -> None:
        self.number = number
        self.network: GsmNetwork | None = None
        self.stores = {"SM": SmsStore("SM", capacity), "ME": SmsStore("ME", capacity)}
        self.pin = pin
        self.manufacturer = manufacturer
        self.model = model
        self.revision = revision
        self.imei = imei
        self.imsi = imsi
        self.signal = signal
        self.registered = registered
        # Script knobs: a +CMS ERROR for the next sends, a silent modem.
        self.fail_sends: list[int] = []
        self.silent = False
        # What the modem saw: every command line, for tests.
        self.commands: list[str] = []
        self.unsolicited: list[str] = []
        self.pin_ok = pin is None
        self._last_line = "AT"
        self.reset()
        self._buffer = bytearray()
        self._body: bytearray | None = None
        self._body_command: tuple[str, str] | None = None
        self._held: list[bytes] = []
        self._mr = 0

    def reset(self) -> None:
        """ATZ: the power-on profile."""
        self.echo = True
        self.verbose = True
        self.quiet = False
        self.cmee = 0
        self.cmgf = 0
        self.cscs = "GSM"
        self.csdh = 0
        self.csca: str | None = "+491710760000"
        self.csmp = [17, 167, 0, 0]
        self.cnmi = [0, 0, 0, 0, 0]
        self.cmer = [0, 0, 0, 0, 0]
        self.creg = 0
        self.cfun = 1
        self.mem = ["SM", "SM", "SM"]
        self._full_reported = False

    # -- byte pipe

    def connectionMade(self) -> None:
        log.info("GSM modem {number} attached", number=self.number)

    def dataReceived(self, data: bytes) -> None:
        if self.silent:
            return
        if self.echo and self._body is None:
            self._write(data)
        for byte in data:
            if self._body is not None:
                self._body_byte(byte)
                continue
            if byte == 0x0D:
                line = self._buffer.decode("latin-1")
                self._buffer.clear()
                self._line(line)
            elif byte == 0x0A:
                continue
            elif byte in (0x08, 0x7F):
                del self._buffer[-1:]
            else:
                self._buffer.append(byte)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _info(self, lines: list[str]) -> bytes:
        # V.250: information text is <CR><LF>text<CR><LF>; the lines of one answer follow
        # each other (27.005's +CMGL header, then its data line).
        if not lines:
            return b""
        head = "\r\n" if self.verbose else ""
        return (head + "".join(f"{line}\r\n" for line in lines)).encode("latin-1")

    def _result(self, word: str, numeric: int) -> bytes:
        if self.quiet:
            return b""
        if self.verbose:
            return f"\r\n{word}\r\n".encode("latin-1")
        return f"{numeric}\r".encode("ascii")

    def _error(self, error: AtError | None) -> bytes:
        if error is None or self.cmee == 0 or (error.cms is None and error.cme is None):
            return self._result("ERROR", 4)
        if error.cms is not None:
            detail = str(error.cms) if self.cmee == 1 else _CMS_TEXT.get(error.cms, "unknown")
            return f"\r\n+CMS ERROR: {detail}\r\n".encode("latin-1")
        assert error.cme is not None
        detail = str(error.cme) if self.cmee == 1 else _CME_TEXT.get(error.cme, "unknown")
        return f"\r\n+CME ERROR: {detail}\r\n".encode("latin-1")

    def unsolicited_code(self, lines: list[str]) -> None:
        """Send an unsolicited result code (held while a message body is being typed)."""
        self.unsolicited.extend(lines)
        data = b"".join(f"\r\n{line}\r\n".encode("latin-1") for line in lines)
        if self._body is not None:
            self._held.append(data)
        else:
            self._write(data)

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for data in held:
            self._write(data)

    # -- command lines

    def _line(self, raw: str) -> None:
        line = raw.strip()
        if not line:
            return
        self.commands.append(line)
        if line.upper() == "A/":
            line = self._last_line
        if line[:2].upper() != "AT":
            return  # not a command: modems ignore it
        self._last_line = line
        rest = line[2:]
        lines: list[str] = []
        try:
            while rest:
                rest = rest.lstrip(" ;")
                if not rest:
                    break
                if rest[0] in "+^$%#*":
                    command, rest = self._split_extended(rest)
                    if self._extended(command, lines):
                        return  # a body prompt is open; the rest of the line is dropped
                else:
                    rest = self._basic(rest, lines)
        except AtError as error:
            self._write(self._info(lines) + self._error(error))
            return
        self._write(self._info(lines) + self._result("OK", 0))

    @staticmethod
    def _split_extended(text: str) -> tuple[str, str]:
        quoted = False
        for i, char in enumerate(text):
            if char == '"':
                quoted = not quoted
            elif char == ";" and not quoted:
                return text[:i], text[i + 1 :]
        return text, ""

    def _basic(self, text: str, lines: list[str]) -> str:
        m = re.match(r"(?i)(&?[A-Z])(\d*)|(S)(\d+)(=\d*|\?)?", text)
        if m is None:
            raise AtError()
        if m.group(3):
            if m.group(5) == "?":
                lines.append("000")
            return text[m.end() :]
        letter, digits = m.group(1).upper(), m.group(2)
        value = int(digits) if digits else 0
        if letter == "D":
            raise AtError()  # no voice or data calls on this modem
        if letter == "E":
            self.echo = value == 1
        elif letter == "V":
            self.verbose = value == 1
        elif letter == "Q":
            self.quiet = value == 1
        elif letter == "Z" or letter == "&F":
            self.reset()
        elif letter == "I":
            lines += [self.manufacturer, self.model, f"Revision: {self.revision}"]
        elif letter in ("H", "X", "&C", "&D", "&K", "&W", "L", "M"):
            pass
        else:
            raise AtError()
        return text[m.end() :]

    def _extended(self, command: str, lines: list[str]) -> bool:
        m = re.match(r"([+^$%#*][A-Za-z]+)(=\?|\?|=)?(.*)", command)
        if m is None:
            raise AtError()
        name, op, arg = m.group(1).upper(), m.group(2) or "", m.group(3)
        handler = getattr(self, "_cmd_" + name[1:].lower(), None)
        if name not in SUPPORTED and name not in _ACCEPTED:
            raise AtError()
        if handler is None:
            return False  # accepted and ignored
        needs_sim = name in ("+CIMI", "+CNUM", "+CMGS", "+CMGR", "+CMGL", "+CMGD", "+CPMS")
        if needs_sim and not self.pin_ok:
            raise AtError(cms=CMS_SIM_PIN_REQUIRED, cme=CME_SIM_PIN_REQUIRED)
        return bool(handler(op, arg, lines))

    # -- identification and network

    def _cmd_cgmi(self, op: str, arg: str, lines: list[str]) -> None:
        lines.append(self.manufacturer)

    _cmd_gmi = _cmd_cgmi

    def _cmd_cgmm(self, op: str, arg: str, lines: list[str]) -> None:
        lines.append(self.model)

    _cmd_gmm = _cmd_cgmm

    def _cmd_cgmr(self, op: str, arg: str, lines: list[str]) -> None:
        lines.append(self.revision)

    _cmd_gmr = _cmd_cgmr

    def _cmd_cgsn(self, op: str, arg: str, lines: list[str]) -> None:
        lines.append(self.imei)

    _cmd_gsn = _cmd_cgsn

    def _cmd_cimi(self, op: str, arg: str, lines: list[str]) -> None:
        lines.append(self.imsi)

    def _cmd_cnum(self, op: str, arg: str, lines: list[str]) -> None:
        toa = 145 if self.number.startswith("+") else 129
        lines.append(f'+CNUM: "","{self.number}",{toa}')

    def _cmd_cpin(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CPIN: READY" if self.pin_ok else "+CPIN: SIM PIN")
        elif op == "=":
            params = _params(arg)
            if not params or params[0] != self.pin:
                raise AtError(cme=CME_INCORRECT_PASSWORD)
            self.pin_ok = True

    def _cmd_cfun(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CFUN: {self.cfun}")
        elif op == "=?":
            lines.append("+CFUN: (0,1,4),(0,1)")
        elif op == "=":
            self.cfun = _int(_params(arg)[0], 0, 4)

    def _registration(self) -> int:
        return 1 if self.registered and self.cfun == 1 and self.pin_ok else 0

    def _cmd_creg(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CREG: {self.creg},{self._registration()}")
        elif op == "=?":
            lines.append("+CREG: (0-2)")
        elif op == "=":
            self.creg = _int(_params(arg)[0] or "0", 0, 2)

    def _cmd_csq(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "=?":
            lines.append("+CSQ: (0-31,99),(0-7,99)")
        else:
            lines.append(f"+CSQ: {self.signal if self._registration() else 99},99")

    def _cmd_cops(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            if self._registration():
                lines.append('+COPS: 0,0,"fep mobile",0')
            else:
                lines.append("+COPS: 0")
        elif op == "=?":
            lines.append('+COPS: (2,"fep mobile","fep","26299",0),,(0-4),(0-2)')

    def _cmd_cmee(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CMEE: {self.cmee}")
        elif op == "=?":
            lines.append("+CMEE: (0-2)")
        elif op == "=":
            self.cmee = _int(_params(arg)[0] or "0", 0, 2)

    def _cmd_cind(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "=?":
            lines.append(
                '+CIND: ("battchg",(0-5)),("signal",(0-5)),("service",(0,1)),'
                '("message",(0,1)),("smsfull",(0,1))'
            )
        elif op == "?":
            full = int(self.stores[self.mem[2]].full)
            lines.append(f"+CIND: 5,{min(self.signal // 6, 5)},{self._registration()},0,{full}")

    def _cmd_cmer(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CMER: " + ",".join(map(str, self.cmer)))
        elif op == "=?":
            lines.append("+CMER: (0,3),(0),(0),(0,1),(0)")
        elif op == "=":
            for i, text in enumerate(_params(arg)[:5]):
                if text:
                    self.cmer[i] = _int(text, 0, 3)

    def _cmd_clac(self, op: str, arg: str, lines: list[str]) -> None:
        lines.extend("AT" + name for name in SUPPORTED)

    # -- SMS settings

    def _cmd_csms(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CSMS: 0,1,1,1")
        elif op == "=?":
            lines.append("+CSMS: (0)")
        elif op == "=":
            _int(_params(arg)[0], 0, 0)
            lines.append("+CSMS: 1,1,1")

    def _cmd_cmgf(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CMGF: {self.cmgf}")
        elif op == "=?":
            lines.append("+CMGF: (0,1)")
        elif op == "=":
            self.cmgf = _int(_params(arg)[0] or "0", 0, 1)

    def _cmd_cscs(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f'+CSCS: "{self.cscs}"')
        elif op == "=?":
            lines.append("+CSCS: (" + ",".join(f'"{c}"' for c in _CHARSETS) + ")")
        elif op == "=":
            charset = (_params(arg) or [""])[0].upper()
            if charset not in _CHARSETS:
                raise AtError(cme=CME_NOT_SUPPORTED)
            self.cscs = charset

    def _cmd_csca(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            if self.csca is None:
                raise AtError(cms=CMS_SMSC_UNKNOWN)
            toa = 145 if self.csca.startswith("+") else 129
            lines.append(f'+CSCA: "{te_encode(self.csca, self.cscs)}",{toa}')
        elif op == "=":
            params = _params(arg)
            if not params or not params[0]:
                raise AtError(cms=CMS_INVALID_TEXT_PARAMETER)
            self.csca = te_decode(params[0], self.cscs)

    def _cmd_csmp(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CSMP: " + ",".join(map(str, self.csmp)))
        elif op == "=?":
            lines.append("+CSMP: (0-255),(0-255),(0-255),(0-255)")
        elif op == "=":
            for i, text in enumerate(_params(arg)[:4]):
                if text:
                    self.csmp[i] = _int(text, 0, 255)

    def _cmd_csdh(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CSDH: {self.csdh}")
        elif op == "=?":
            lines.append("+CSDH: (0,1)")
        elif op == "=":
            self.csdh = _int((_params(arg) or ["0"])[0] or "0", 0, 1)

    def _cmd_cnmi(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CNMI: " + ",".join(map(str, self.cnmi)))
        elif op == "=?":
            lines.append("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
        elif op == "=":
            limits = (2, 3, 3, 2, 1)
            for i, text in enumerate(_params(arg)[:5]):
                if text:
                    self.cnmi[i] = _int(text, 0, limits[i])

    def _cpms_line(self) -> str:
        parts = [f'"{m}",{self.stores[m].used},{self.stores[m].capacity}' for m in self.mem]
        return ",".join(parts)

    def _cmd_cpms(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append("+CPMS: " + self._cpms_line())
        elif op == "=?":
            lines.append('+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")')
        elif op == "=":
            params = [p.upper() for p in _params(arg)][:3]
            if not params or any(p not in self.stores for p in params if p):
                raise AtError(cms=CMS_NOT_SUPPORTED)
            for i, name in enumerate(params):
                if name:
                    self.mem[i] = name
            used = [f"{self.stores[m].used},{self.stores[m].capacity}" for m in self.mem]
            lines.append("+CPMS: " + ",".join(used))

    # -- the store

    def _store(self) -> SmsStore:
        return self.stores[self.mem[0]]

    def _cmd_cmgr(self, op: str, arg: str, lines: list[str]) -> None:
        if op != "=":
            raise AtError(cms=CMS_NOT_ALLOWED)
        store = self._store()
        index = self._index(arg, store)
        slot = store.slots.get(index)
        if slot is None:
            raise AtError(cms=CMS_INVALID_INDEX)
        lines.extend(self._show(slot, None))
        if slot.status == 0:
            slot.status = 1

    def _index(self, arg: str, store: SmsStore) -> int:
        try:
            index = int(_params(arg)[0])
        except (ValueError, IndexError):
            raise AtError(cms=CMS_INVALID_INDEX)
        if not 1 <= index <= store.capacity:
            raise AtError(cms=CMS_INVALID_INDEX)
        return index

    def _cmd_cmgl(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "=?":
            if self.cmgf:
                lines.append("+CMGL: (" + ",".join(f'"{s}"' for s in STAT_TEXT) + ")")
            else:
                lines.append("+CMGL: (0-4)")
            return
        wanted = (_params(arg) or ["REC UNREAD" if self.cmgf else "0"])[0]
        if self.cmgf:
            if wanted.upper() not in STAT_TEXT:
                raise AtError(cms=CMS_INVALID_TEXT_PARAMETER)
            stat = STAT_TEXT.index(wanted.upper())
        else:
            try:
                stat = _int(wanted, 0, 4)
            except AtError:
                raise AtError(cms=CMS_INVALID_PDU_PARAMETER)
        store = self._store()
        for index in sorted(store.slots):
            slot = store.slots[index]
            if stat != 4 and slot.status != stat:
                continue
            lines.extend(self._show(slot, index))
            if slot.status == 0:
                slot.status = 1

    def _cmd_cmgd(self, op: str, arg: str, lines: list[str]) -> None:
        if op != "=":
            if op == "=?":
                store = self._store()
                lines.append(f"+CMGD: ({','.join(map(str, sorted(store.slots)))}),(0-4)")
                return
            raise AtError(cms=CMS_NOT_ALLOWED)
        store = self._store()
        params = _params(arg)
        flag = _int(params[1], 0, 4) if len(params) > 1 and params[1] else 0
        if flag == 0:
            store.slots.pop(self._index(arg, store), None)
        else:
            doomed = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}[flag]
            for index in [i for i, s in store.slots.items() if s.status in doomed]:
                del store.slots[index]
        self._room_made()

    def _room_made(self) -> None:
        # After the command's answer: the indicator, then the SMMA (the network retries).
        if self.network is not None:
            self.network.reactor.callLater(0, self._memory_available)
        else:
            self._memory_available()

    def _memory_available(self) -> None:
        store = self.stores[self.mem[2]]
        if store.full:
            return
        if self._full_reported:
            self._full_reported = False
            self._indicate_full(0)
        if self.network is not None:
            self.network.memory_available(self)

    def _indicate_full(self, value: int) -> None:
        if self.cmer[0] in (1, 2, 3) and self.cmer[3] >= 1:
            self.unsolicited_code([f"+CIEV: 5,{value}"])

    def _show(self, slot: StoredSms, index: int | None) -> list[str]:
        """The +CMGR (index None) or +CMGL lines of a stored message."""
        tpdu = slot.tpdu
        head = "+CMGR: " if index is None else f"+CMGL: {index},"
        if isinstance(tpdu, bytes):
            return [f"{head}{slot.status},,{max(len(tpdu) - 1, 0)}", tpdu.hex().upper()]
        if not self.cmgf:
            pdu = encode_pdu(tpdu)
            length = len(pdu) - 1 - pdu[0]
            return [f"{head}{slot.status},,{length}", pdu.hex().upper()]
        stat = f'"{STAT_TEXT[slot.status]}"'
        if isinstance(tpdu, StatusReport):
            return [f"{head}{stat},{self._report_fields(tpdu)}"]
        assert isinstance(tpdu, Deliver)
        data, length = self._text_data(tpdu)
        oa = f'"{te_encode(str(tpdu.originator), self.cscs)}"'
        scts = f'"{text_timestamp(tpdu.timestamp)}"'
        header = f"{head}{stat},{oa},,{scts}"
        if self.csdh:
            header += self._deliver_details(tpdu, length, with_sca=index is None)
        return [header, data]

    def _deliver_details(self, tpdu: Deliver, length: int, *, with_sca: bool) -> str:
        tooa = tpdu.originator.type_octet
        if not with_sca:
            return f",{tooa},{length}"
        first = encode_pdu(attrs.evolve(tpdu, smsc=None))[1]
        sca = str(tpdu.smsc) if tpdu.smsc is not None else ""
        tosca = tpdu.smsc.type_octet if tpdu.smsc is not None else 129
        return (
            f',{tooa},{first},{tpdu.pid},{tpdu.dcs},"{te_encode(sca, self.cscs)}",{tosca},{length}'
        )

    def _report_fields(self, report: StatusReport) -> str:
        first = encode_pdu(attrs.evolve(report, smsc=None))[1]
        ra = te_encode(str(report.recipient), self.cscs)
        return (
            f'{first},{report.reference},"{ra}",{report.recipient.type_octet},'
            f'"{text_timestamp(report.timestamp)}","{text_timestamp(report.discharge)}",'
            f"{report.status}"
        )

    def _text_data(self, tpdu: Deliver) -> tuple[str, int]:
        """Text-mode <data> and <length>: text in the TE set for GSM 7-bit without a header,
        else the TP-UD octets in hex (27.005 3.1); the length is TP-UDL."""
        coding = data_coding(tpdu.dcs)
        alphabet = Alphabet.DATA8 if coding.compressed else coding.alphabet
        udl, ud = encode_user_data(tpdu.user_data, alphabet)
        if alphabet is Alphabet.GSM7 and not tpdu.user_data.header:
            assert isinstance(tpdu.body, str)
            return te_encode(tpdu.body, self.cscs), udl
        return ud.hex().upper(), udl

    # -- sending

    def _cmd_cmgs(self, op: str, arg: str, lines: list[str]) -> bool:
        if op == "=?":
            return False
        if op != "=":
            raise AtError(cms=CMS_NOT_ALLOWED)
        params = _params(arg)
        if not params or not params[0]:
            raise AtError(
                cms=CMS_INVALID_TEXT_PARAMETER if self.cmgf else CMS_INVALID_PDU_PARAMETER
            )
        if not self.cmgf and not params[0].isdecimal():
            raise AtError(cms=CMS_INVALID_PDU_PARAMETER)
        self._body = bytearray()
        self._body_command = ("text" if self.cmgf else "pdu", arg)
        self._write(b"\r\n> ")
        return True

    def _body_byte(self, byte: int) -> None:
        assert self._body is not None
        if byte == ESC:
            self._body = None
            self._write(self._result("OK", 0))
            self._flush_held()
            return
        if byte != CTRL_Z:
            if self.echo:
                self._write(bytes((byte,)))
            if byte == 0x0D and self._body_command and self._body_command[0] == "text":
                self._body.append(0x0A)
                self._write(b"\n> ")
            elif byte == 0x0A and self._body_command and self._body_command[0] == "text":
                pass  # the LF after a CR (the CR already stood for the line end)
            else:
                self._body.append(byte)
            return
        body = self._body.decode("latin-1")
        self._body = None
        assert self._body_command is not None
        kind, arg = self._body_command
        try:
            submit = self._pdu_submit(arg, body) if kind == "pdu" else self._text_submit(arg, body)
            reference = self._send(submit)
        except AtError as error:
            self._write(self._error(error))
        else:
            self._write(self._info([f"+CMGS: {reference}"]) + self._result("OK", 0))
        self._flush_held()

    def _pdu_submit(self, arg: str, body: str) -> Submit:
        length = int(_params(arg)[0])
        try:
            raw = bytes.fromhex("".join(body.split()))
            tpdu = decode_pdu(raw, direction=Direction.FROM_MODEM)
        except (ValueError, FrameError):
            raise AtError(cms=CMS_INVALID_PDU_PARAMETER)
        if len(raw) - 1 - raw[0] != length:
            raise AtError(cms=CMS_INVALID_PDU_PARAMETER)
        assert isinstance(tpdu, Submit)
        return tpdu

    def _text_submit(self, arg: str, body: str) -> Submit:
        params = _params(arg)
        number = te_decode(params[0], self.cscs)
        toda = int(params[1]) if len(params) > 1 and params[1].isdecimal() else None
        if toda == 145 and not number.startswith("+"):
            number = "+" + number
        try:
            destination = Address.parse(number)
        except ValueError:
            raise AtError(cms=CMS_INVALID_TEXT_PARAMETER)
        first, vp, pid, dcs = self.csmp
        coding = data_coding(dcs)
        udhi = bool(first & 0x40)
        try:
            if coding.alphabet is Alphabet.GSM7 and not udhi and not coding.compressed:
                user_data = UserData(te_decode(body, self.cscs))
                encode_user_data(user_data, Alphabet.GSM7)
            else:
                octets = bytes.fromhex(body)
                if coding.alphabet is Alphabet.GSM7 and not coding.compressed:
                    udl = len(octets) * 8 // 7
                    octets = octets[: user_data_size(udl, dcs)]
                else:
                    udl = len(octets)
                user_data = decode_user_data(octets, udl, dcs, udhi)
        except (ValueError, FrameError):
            raise AtError(cms=CMS_INVALID_TEXT_PARAMETER)
        vpf = (first >> 3) & 3
        return Submit(
            destination,
            user_data,
            dcs=dcs,
            pid=pid,
            validity=relative_validity(vp) if vpf == 2 else None,
            reject_duplicates=bool(first & 0x04),
            status_report=bool(first & 0x20),
            reply_path=bool(first & 0x80),
        )

    def _send(self, submit: Submit) -> int:
        if not self.pin_ok:
            raise AtError(cms=CMS_SIM_PIN_REQUIRED)
        if not self._registration() or self.network is None:
            raise AtError(cms=CMS_NO_NETWORK)
        if submit.smsc is None and self.csca is None:
            raise AtError(cms=CMS_SMSC_UNKNOWN)
        if self.fail_sends:
            raise AtError(cms=self.fail_sends.pop(0))
        self._mr = (self._mr + 1) & 0xFF
        submit = attrs.evolve(submit, reference=self._mr)
        self.network.submit(self, submit, self._mr)
        return self._mr

    # -- from the network

    def receive_sms(self, deliver: Deliver) -> bool:
        """The network delivers one SMS-DELIVER; False when memory is full (the network
        keeps it and retries when told memory is available)."""
        mode, mt = self.cnmi[0], self.cnmi[1]
        if mode and mt in (2, 3) and (mt == 2 or deliver.coding.message_class == 3):
            self.unsolicited_code(self._direct_lines(deliver))
            return True
        store = self.stores[self.mem[2]]
        index = store.put(deliver)
        if index is None:
            if not self._full_reported:
                self._full_reported = True
                self._indicate_full(1)
            return False
        if mode and mt:
            self.unsolicited_code([f'+CMTI: "{store.name}",{index}'])
        if store.full and not self._full_reported:
            self._full_reported = True
            self._indicate_full(1)
        return True

    def _direct_lines(self, deliver: Deliver) -> list[str]:
        if not self.cmgf:
            pdu = encode_pdu(deliver)
            return [f"+CMT: ,{len(pdu) - 1 - pdu[0]}", pdu.hex().upper()]
        data, length = self._text_data(deliver)
        oa = te_encode(str(deliver.originator), self.cscs)
        header = f'+CMT: "{oa}",,"{text_timestamp(deliver.timestamp)}"'
        if self.csdh:
            header += self._deliver_details(deliver, length, with_sca=True)
        return [header, data]

    def receive_report(self, report: StatusReport) -> None:
        """The network sends a delivery report; CNMI <ds> says where it goes."""
        mode, ds = self.cnmi[0], self.cnmi[3]
        if not mode or ds == 0:
            return
        if ds == 1:
            if self.cmgf:
                self.unsolicited_code(["+CDS: " + self._report_fields(report)])
            else:
                pdu = encode_pdu(report)
                self.unsolicited_code([f"+CDS: {len(pdu) - 1 - pdu[0]}", pdu.hex().upper()])
            return
        store = self.stores[self.mem[2]]
        index = store.put(report)
        if index is not None:
            self.unsolicited_code([f'+CDSI: "{store.name}",{index}'])


class GsmModemFactory(Factory):
    """Builds the one emulator it holds (a pty or a TCP test connection)."""

    def __init__(self, modem: GsmModemEmulator) -> None:
        self.modem = modem

    def buildProtocol(self, addr: Any) -> GsmModemEmulator:
        return self.modem


class SimulatedFieldDevice:
    """A field device reached by SMS (a GPRS modem of a meter, a data logger): it answers
    configuration/status texts, sends alarms, and runs ``on_wakeup`` when its wake-up text
    arrives (the lead's GPRS simulator dials in from there)."""

    def __init__(
        self,
        network: GsmNetwork,
        number: str,
        *,
        wakeup_text: str = "WAKEUP",
        on_wakeup: Callable[[SimulatedFieldDevice, SentMessage], object] | None = None,
        replies: dict[str, str] | None = None,
        reply_to_wakeup: str | None = None,
    ) -> None:
        self.network = network
        self.number = number
        self.wakeup_text = wakeup_text
        self.on_wakeup = on_wakeup
        self.replies = dict(replies or {})
        self.reply_to_wakeup = reply_to_wakeup
        self.received: list[SentMessage] = []
        self.wakeups = 0
        network.route(number, self.message)

    def message(self, message: SentMessage) -> None:
        self.received.append(message)
        text = message.text.strip()
        if text.upper() == self.wakeup_text.upper():
            self.wakeups += 1
            if self.reply_to_wakeup:
                self.send(message.sender, self.reply_to_wakeup)
            if self.on_wakeup is not None:
                self.on_wakeup(self, message)
            return
        reply = self.replies.get(text) or self.replies.get(text.upper())
        if reply is not None:
            self.send(message.sender, reply)

    def send(self, to: str, text: str) -> list[Deliver]:
        """The device sends a text (an alarm, a status) to the modem ``to``."""
        return self.network.deliver(to, text, self.number)


def serve_pty(
    reactor: IConnectingReactor, device: str, modem: GsmModemEmulator, baud: int = 115200
) -> Any:
    """Serve ``modem`` on a serial device or pty (8N1)."""
    return serve.serve_pty(reactor, device, modem, baudrate=baud, frame="8N1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.gsm_modem", description="A simulated GSM modem with SMS"
    )
    parser.add_argument("--pty", required=True, metavar="DEVICE", help="serial device or pty")
    parser.add_argument("--number", default="+491700000001", help="the modem's own number")
    parser.add_argument("--capacity", type=int, default=20, help="message store slots")
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NUMBER",
        help="a field device at NUMBER answering STATUS? and WAKEUP (repeatable)",
    )
    parser.add_argument(
        "--deliver",
        action="append",
        default=[],
        metavar="FROM:TEXT",
        help="deliver this message to the modem once it is up (repeatable)",
    )
    args = parser.parse_args(argv)

    reactor = serve.command_reactor()
    network = GsmNetwork(reactor, delivery_delay=0.5)
    modem = GsmModemEmulator(args.number, capacity=args.capacity)
    network.attach(modem)
    for number in args.device:
        SimulatedFieldDevice(
            network, number, replies={"STATUS?": "STATUS OK"}, reply_to_wakeup="WAKE OK"
        )
    for item in args.deliver:
        sender, _, text = item.partition(":")
        network.deliver(args.number, text, sender)
    serve_pty(reactor, args.pty, modem)
    print(f"GSM modem {args.number} on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "GsmModemEmulator",
    "GsmModemFactory",
    "GsmNetwork",
    "SentMessage",
    "SentSms",
    "SimulatedFieldDevice",
    "SmsStore",
    "serve_pty",
    "te_decode",
    "te_encode",
    "text_timestamp",
]
