"""Modem dialects: the per-model quirks table (matched on the ``AT+CGMI``/``AT+CGMM``
answers) and the readers for the answers that differ between models (``AT+CPMS=?``,
``AT+CGMI``, ``AT+CFUN?``).

Most modems need no entry: the AT engine already takes echo that will not switch off,
unsolicited codes inside an answer, ``COMMAND NOT SUPPORT``, numeric and verbose ``+CME``/
``+CMS ERROR``; the SMS channel waits out a busy SIM and picks the message memories the modem
offers. An entry is for what cannot be seen from the answers themselves: an answer that ends
without a final result code, a command with a side effect, a modem's own unsolicited codes.

Adding a model: one ``ModemDialect`` in ``DIALECTS`` with the patterns that match its
``AT+CGMI``/``AT+CGMM`` answers, its quirks, and the source of the facts
(docs/channels/sms.md "Modem dialects"). Sans-IO: no Twisted here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import attrs


@attrs.frozen
class ModemDialect:
    """What one family of modems does differently.

    - ``no_final``: commands (prefixes, upper case) whose answer ends without a final result
      code; the answer is taken as complete at its first information line.
    - ``urcs``: unsolicited result codes of the family the engine does not know already.
    - ``csmp_clears_smsc``: ``AT+CSMP`` forgets the service centre number; the channel sets
      it again (``AT+CSCA``) after every ``AT+CSMP``.
    - ``init``: extra commands sent after identification (failures ignored).
    """

    name: str
    manufacturer: str
    source: str
    model: str = ""
    no_final: tuple[str, ...] = ()
    urcs: tuple[str, ...] = ()
    csmp_clears_smsc: bool = False
    init: tuple[str, ...] = ()

    def matches(self, manufacturer: str, model: str) -> bool:
        if not re.search(self.manufacturer, manufacturer, re.IGNORECASE):
            return False
        return not self.model or bool(re.search(self.model, model, re.IGNORECASE))

    def answers_without_final(self, command: str) -> bool:
        text = command.strip().upper()
        return any(text.startswith(prefix) for prefix in self.no_final)


GENERIC: Final = ModemDialect("generic", "", "3GPP TS 27.007/27.005 and ITU-T V.250")

GSMMODEM_TESTS: Final = (
    "python-gsmmodem-new test/fakemodems.py (recorded answers of real modems), "
    "https://github.com/babca/python-gsmmodem"
)

# First match wins: put specific models before their family.
DIALECTS: Final[tuple[ModemDialect, ...]] = (
    ModemDialect(
        "wavecom",
        r"wavecom",
        GSMMODEM_TESTS + " (WavecomMultiband900E1800: '+CPIN replies are not ended with OK')",
        no_final=("AT+CPIN?",),
        urcs=("+WIND", "+STIN"),
    ),
    ModemDialect(
        "qualcomm-zte",
        r"qualcomm|zte",
        GSMMODEM_TESTS + " (QualcommM6280, ZteK3565Z: 'AT+CSMP clears the SMSC number', "
        "python-gsmmodem issue #8)",
        csmp_clears_smsc=True,
        urcs=("+ZPASR", "+ZUSIMR", "+ZDONR", "+ZEND", "+ZSTR", "HANGUP"),
    ),
    ModemDialect(
        "huawei",
        r"huawei",
        GSMMODEM_TESTS + " (HuaweiK3715, HuaweiE1752); Huawei HSPA modem AT command "
        "interface specification (^CURC, ^RSSI, ^BOOT, ^MODE, ^DSFLOWRPT)",
        urcs=("^RSSI", "^BOOT", "^MODE", "^DSFLOWRPT", "^SRVST", "^SIMST", "^EARST",
              "^STIN", "^NDISSTAT", "^HCSQ", "^ORIG", "^CONF", "^CONN", "^CEND"),
        init=("AT^CURC=0",),
    ),
)


def dialect_for(manufacturer: str, model: str) -> ModemDialect:
    """The dialect of a modem by its ``AT+CGMI`` and ``AT+CGMM`` answers; GENERIC when no
    entry matches."""
    for dialect in DIALECTS:
        if dialect.matches(manufacturer, model):
            return dialect
    return GENERIC


def identification(lines: Sequence[str], name: str) -> str:
    """The text of an identification answer (``AT+CGMI``, ``AT+CGMM``): its first non-empty
    line without a ``+CGMI:``-style prefix and without the padding some modems add
    (Wavecom: ``" WAVECOM MODEM"``, ``" MULTIBAND  900E  1800"``)."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        head, colon, rest = text.partition(":")
        if colon and head.strip().upper() in (name.upper(), name.upper().replace("+C", "+")):
            text = rest.strip()
        return " ".join(text.strip('"').split())
    return ""


_GROUP = re.compile(r"\(([^()]*)\)")
_NAME = re.compile(r'"([^"]*)"')


def offered_memories(lines: Sequence[str]) -> list[tuple[str, ...]] | None:
    """The memories an ``AT+CPMS=?`` answer offers for <mem1>, <mem2>, <mem3> (as many as
    the modem lists: Wavecom lists two). Forms seen: ``("ME","SM"),("ME","SM"),("SM")``,
    ``(("SM","BM","SR"),("SM"))``, ``(),(),()`` (Nokia: none), and bare lists without
    parentheses. None when the answer has no ``+CPMS:`` line."""
    for line in lines:
        text = line.strip()
        if not text.upper().startswith("+CPMS:"):
            continue
        value = text[6:].strip()
        if value.startswith("((") and value.endswith("))"):
            value = value[1:-1]
        groups = _GROUP.findall(value)
        if not groups:
            names = tuple(n.upper() for n in _NAME.findall(value))
            return [names, names, names] if names else [(), (), ()]
        return [tuple(n.upper() for n in _NAME.findall(group)) for group in groups[:3]]
    return None


def choose_memories(
    offered: Sequence[tuple[str, ...]], wanted: str
) -> tuple[str, ...] | None:
    """The memories to set with ``AT+CPMS`` from what the modem offers: ``wanted`` where
    offered, else the first of SM, ME, MT offered, else the modem's first; one per position
    the modem lists. <mem3> (where received messages and reports are stored) follows <mem1>
    when it can, so one listing sees them all. None when <mem1> offers nothing (the modem
    cannot read stored messages)."""
    if not offered or not offered[0]:
        return None
    wanted = wanted.upper()

    def pick(choices: tuple[str, ...], first: str) -> str:
        for name in (first, wanted, "SM", "ME", "MT"):
            if name in choices:
                return name
        return choices[0]

    mem1 = pick(offered[0], wanted)
    chosen = [mem1]
    for choices in offered[1:]:
        if not choices:
            break
        chosen.append(pick(choices, mem1))
    return tuple(chosen)


def radio_off(lines: Sequence[str]) -> bool:
    """True when ``AT+CFUN?`` says the radio is off or limited (``+CFUN: 0``/``4``); an
    answer in another shape (ZTE K3565-Z lists ranges: ``+CFUN: (0-1,4-7),(0-1)``) is not
    taken for off."""
    for line in lines:
        m = re.fullmatch(r"\+CFUN:\s*([0-9]{1,3})(?:\s*,.*)?", line.strip(), re.IGNORECASE)
        if m is not None:
            return int(m.group(1)) != 1
    return False


# Errors that mean "busy, ask again shortly" (27.007 9.2: 14 SIM busy; 27.005 3.2.5: 314 SIM
# busy; 515 is the "please wait, initialisation or command processing in progress" of Wavecom,
# Sierra and Telit).
BUSY_CME: Final = frozenset({14, 515})
BUSY_CMS: Final = frozenset({314, 515})
# "SIM PIN required" as +CME (27.007) and +CMS (27.005).
PIN_CME: Final = frozenset({11})
PIN_CMS: Final = frozenset({311})


def _small(text: str) -> bool:
    """ASCII digits, at most three (``str.isdigit`` also takes superscripts ``int`` refuses)."""
    return 0 < len(text) <= 3 and text.isascii() and text.isdecimal()


def _values(group: str) -> frozenset[int]:
    """``0-3`` / ``0,2,3`` / ``1`` -> the numbers."""
    found: set[int] = set()
    for item in group.split(","):
        item = item.strip()
        low, dash, high = (part.strip() for part in item.partition("-"))
        if not _small(low) or (dash and not _small(high)):
            continue
        first = int(low)
        last = int(high) if dash else first
        if 0 <= first <= last <= 9:
            found.update(range(first, last + 1))
    return frozenset(found)


def offered_indications(lines: Sequence[str]) -> list[frozenset[int]] | None:
    """``+CNMI: (0-3),(0,1),(0,2,3),(0,2),(1)`` (AT+CNMI=?) -> the values offered for
    <mode>, <mt>, <bm>, <ds>, <bfr>; None when the answer has no ``+CNMI:`` line."""
    for line in lines:
        text = line.strip()
        if text.upper().startswith("+CNMI:"):
            return [_values(group) for group in _GROUP.findall(text[6:])][:5]
    return None


def choose_indications(offered: Sequence[frozenset[int]], reports: bool) -> str | None:
    """The ``AT+CNMI`` to send from what the modem offers: new messages stored and announced
    (<mt> 1, +CMTI; else 2, routed as +CMT), delivery reports announced when wanted (<ds> 2,
    +CDSI; else 1, +CDS), no cell broadcasts, buffered codes flushed (<bfr> 0, else what is
    offered: Cinterion MC75i offers only 1). None when <mode> or <mt> offer nothing usable."""
    preferences: tuple[tuple[int, ...], ...] = (
        (2, 1, 3),
        (1, 2),
        (0,),
        (2, 1, 0) if reports else (0,),
        (0, 1),
    )
    chosen: list[int] = []
    for i, wanted in enumerate(preferences):
        if i >= len(offered):
            break
        values = offered[i]
        pick = next((v for v in wanted if v in values), None)
        if pick is None:
            if i < 2 or not values:
                return None if i < 2 else "AT+CNMI=" + ",".join(map(str, chosen))
            pick = min(values)
        chosen.append(pick)
    if len(chosen) < 2:
        return None
    return "AT+CNMI=" + ",".join(map(str, chosen))
