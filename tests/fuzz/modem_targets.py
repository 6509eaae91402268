"""Fuzz targets of the modem side: the AT command engine (what a modem sends back), the SMS
PDU codec and the SMS command answers and indications."""

from __future__ import annotations

from fep.channels.modem import dialects, pdu
from fep.channels.modem import sms_at as commands
from fep.channels.modem.at import AtEngine, Command, Response, Unsolicited, split_params
from fep.errors import FrameError
from tests.fuzz.parts import chunks

_COMMANDS = (
    Command("AT"),
    Command("AT+CMGL=4"),
    Command("AT+CMGS=20", body=b"0011000B916407281553F80000AA0AE8329BFD4697D9EC37"),
    Command("ATD+5411"),
    Command("AT+CPMS?"),
)


def at_engine(data: bytes) -> None:
    """The engine with commands queued, fed what a modem might send in pieces; the first
    byte sets echo, verbose results and the command order. Never raises (documented), and
    whatever it hands out goes to the SMS helpers that read those outputs."""
    if not data:
        return
    flags = data[0]
    engine = AtEngine(echo=bool(flags & 1), verbose=bool(flags & 2), max_line=64 + flags)
    for command in _COMMANDS[flags % len(_COMMANDS):] + _COMMANDS[: flags % len(_COMMANDS)]:
        engine.submit(command)
    for n, piece in enumerate(chunks(data[1:])):
        outputs = engine.receive(piece)
        if flags & 4 and n % 7 == 6:
            outputs += engine.expire()
        for output in outputs:
            if isinstance(output, Unsolicited):
                output.params  # noqa: B018 (the property parses)
            elif isinstance(output, Response):
                output.result.describe()
                try:
                    commands.read_message(output.lines, bool(flags & 8))
                    commands.listed_indexes(output.lines)
                except FrameError:
                    pass
    engine.expire()


def sms_pdu(data: bytes) -> None:
    """A PDU with and without its SMSC field, each direction; the hex form too. FrameError
    for bytes that are not a PDU."""
    for with_smsc in (True, False):
        for direction in (None, pdu.Direction.FROM_MODEM, pdu.Direction.TO_MODEM):
            try:
                tpdu = pdu.decode_pdu(data, with_smsc=with_smsc, direction=direction)
            except FrameError:
                continue
            if isinstance(tpdu, pdu.Deliver | pdu.Submit):
                tpdu.body  # noqa: B018 (decodes the user data)
            if isinstance(tpdu, pdu.Deliver):
                pdu.Reassembler().add(tpdu, 0.0)
    try:
        pdu.decode_hex_pdu(data.decode("latin-1"))
    except FrameError:
        pass


def sms_at(data: bytes) -> None:
    """SMS command answers and indications as text lines (latin-1), the first line the
    indication's value and the second its body. FrameError for answers that do not parse."""
    text = data.decode("latin-1")
    lines = text.split("\n")
    value, body = lines[0], (lines[1] if len(lines) > 1 else None)
    split_params(value)
    calls = (
        lambda: commands.read_message(lines, False),
        lambda: commands.read_message(lines, True),
        lambda: commands.listed_indexes(lines),
        lambda: commands.sent_reference(lines),
        lambda: commands.memory_usage(lines),
        lambda: commands.indicator_index(lines, "message"),
        lambda: commands.new_message_slot(value),
        lambda: commands.routed_message(value, body, False),
        lambda: commands.routed_message(value, body, True),
        lambda: commands.routed_report(value, body, False),
        lambda: commands.routed_report(value, body, True),
        lambda: commands.text_body(text),
    )
    for call in calls:
        try:
            call()
        except FrameError:
            pass


def modem_dialect(data: bytes) -> None:
    """The readers of answers that differ between modem models (AT+CPMS=?, AT+CNMI=?,
    AT+CGMI/AT+CGMM, AT+CFUN?) and the quirks-table look-up, on text lines; they never
    raise (documented: an answer they cannot read gives None or nothing)."""
    lines = data.decode("latin-1").split("\n")
    offered = dialects.offered_memories(lines)
    if offered is not None:
        dialects.choose_memories(offered, lines[0][:4])
    ranges = dialects.offered_indications(lines)
    if ranges is not None:
        dialects.choose_indications(ranges, True)
        dialects.choose_indications(ranges, False)
    name = dialects.identification(lines, "+CGMI")
    dialects.dialect_for(name, dialects.identification(lines[1:], "+CGMM"))
    dialects.radio_off(lines)


TARGETS = {
    "at_engine": at_engine,
    "sms_pdu": sms_pdu,
    "sms_at": sms_at,
    "modem_dialect": modem_dialect,
}
