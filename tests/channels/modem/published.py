"""Answers of real modems, as recorded in python-gsmmodem's test suite.

Source: github.com/faucamp/python-gsmmodem, test/fakemodems.py (commit 0c59976c, the modem
descriptors "taken from" real devices) and test/test_modem.py (commit ff368252), MIT licence.
Each dialogue: the modem model, the command line fep sends, the bytes the modem answered (the
descriptors' response lists joined, with the CR LF before each line a verbose modem sends),
what the engine must make of them: (final result line, information lines, unsolicited names).
Lines marked "as recorded" keep the descriptors' quirks (leading spaces, doubled CR, missing
OK, vendor error words).
"""

from __future__ import annotations

from typing import NamedTuple


class Dialogue(NamedTuple):
    modem: str
    command: str
    answer: bytes
    final: str | None  # None: the modem never ends the command (it times out)
    lines: tuple[str, ...]
    unsolicited: tuple[str, ...] = ()


def _answer(*lines: str) -> bytes:
    return "".join(f"\r\n{line}" for line in lines).encode("latin-1")


HUAWEI_E1752_CLAC = ("&C", "&D", "&F", "&V", "E", "I", "L", "M", "Q", "V", "X", "Z", "T", "P",
                     "D", "A", "H", "O", "S0", "S2", "+CMGS", "^CURC", "^BOOT", "$QCSIMSTAT")

DIALOGUES: tuple[Dialogue, ...] = (
    Dialogue("Wavecom Multiband 900E 1800", "AT+CGMI",
             _answer(" WAVECOM MODEM\r\n", "OK\r\n"), "OK", (" WAVECOM MODEM",)),
    Dialogue("Wavecom Multiband 900E 1800", "AT+CGMM",
             _answer(" MULTIBAND  900E  1800\r\n", "OK\r\n"), "OK", (" MULTIBAND  900E  1800",)),
    Dialogue("Wavecom Multiband 900E 1800", "AT+CGMR", _answer("ERROR\r\n"), "ERROR", ()),
    Dialogue("Wavecom Multiband 900E 1800", "AT+CPMS=?",
             _answer('+CPMS: (("SM","BM","SR"),("SM"))\r\n', "OK\r\n"), "OK",
             ('+CPMS: (("SM","BM","SR"),("SM"))',)),
    Dialogue("Wavecom Multiband 900E 1800", 'AT+CPMS="SM","SM"',
             _answer("+CPMS: 14,50,14,50\r\n", "OK\r\n"), "OK", ("+CPMS: 14,50,14,50",)),
    # As recorded: this Wavecom answers AT+CPIN? without the final OK.
    Dialogue("Wavecom Multiband 900E 1800", "AT+CPIN?", _answer("+CPIN: READY\r\n"), None,
             ("+CPIN: READY",)),
    Dialogue("Wavecom Multiband 900E 1800", "AT+CFUN=1", _answer("+CME ERROR: 515\r\n"),
             "+CME ERROR: 515", ()),
    # Call set-up notifications of the Wavecom between commands.
    Dialogue("Wavecom Multiband 900E 1800", "AT+CLCC",
             _answer("+WIND: 5,1\r\n", "+WIND: 2\r\n", "OK\r\n"), "OK", (),
             ("+WIND", "+WIND")),
    Dialogue("Huawei K3715", "AT+CGMR", _answer("11.104.05.00.00\r\n", "OK\r\n"), "OK",
             ("11.104.05.00.00",)),
    Dialogue("Huawei K3715", "AT+CPMS=?",
             _answer('+CPMS: ("ME","MT","SM","SR"),("ME","MT","SM","SR"),("ME","MT","SM","SR")'
                     "\r\n", "OK\r\n"), "OK",
             ('+CPMS: ("ME","MT","SM","SR"),("ME","MT","SM","SR"),("ME","MT","SM","SR")',)),
    Dialogue("Huawei K3715", "ATD0123456789;",
             _answer("OK\r\n", "^ORIG:1,0\r\n", "^CONF:1\r\n"), "OK", (), ("^ORIG", "^CONF")),
    # As recorded: Huawei E1752 says COMMAND NOT SUPPORT for ERROR, and ends each +CLAC line
    # with a doubled CR.
    Dialogue("Huawei E1752", "AT+WIND?", _answer("COMMAND NOT SUPPORT\r\n"), "COMMAND NOT SUPPORT",
             ()),
    Dialogue("Huawei E1752", "AT+CLAC",
             _answer(*[f"{name}\r\r\n" for name in HUAWEI_E1752_CLAC], "OK\r\n"), "OK",
             HUAWEI_E1752_CLAC),
    Dialogue("Qualcomm M6280 (ZTE)", "AT+CGMR",
             _answer("M6280_V1.0.0 M6280_V1.0.0 1 [Sep 4 2008 12:00:00]\r\n", "OK\r\n"), "OK",
             ("M6280_V1.0.0 M6280_V1.0.0 1 [Sep 4 2008 12:00:00]",)),
    Dialogue("Qualcomm M6280 (ZTE)", "AT+ZPAS?",
             _answer('+BEARTYPE: "UMTS","CS_PS"\r\n', "OK\r\n"), "OK",
             ('+BEARTYPE: "UMTS","CS_PS"',)),
    Dialogue("Qualcomm M6280 (ZTE)", "AT+CSCA?", _answer("+CME ERROR: 14\r\n"),
             "+CME ERROR: 14", ()),
    Dialogue("ZTE K3565-Z", "AT+CFUN?",
             _answer("+CFUN: (0-1,4-7),(0-1)\r\n", "OK\r\n"), "OK", ("+CFUN: (0-1,4-7),(0-1)",)),
    Dialogue("ZTE K3565-Z", "AT+CVHU=0", _answer("+CVHU: (0-1)\r\n", "OK\r\n"), "OK",
             ("+CVHU: (0-1)",)),
    Dialogue("Nokia N79", "AT+CGMR",
             _answer("V ICPR72_08w44.1\r\n", "24-11-08\r\n", "RM-348\r\n", "(c) Nokia\r\n",
                     "11.049\r\n", "OK\r\n"), "OK",
             ("V ICPR72_08w44.1", "24-11-08", "RM-348", "(c) Nokia", "11.049")),
    Dialogue("Nokia N79", "AT+CSMP?", _answer("+CSMP: 49,167,0,0\r\n", "OK\r\n"), "OK",
             ("+CSMP: 49,167,0,0",)),
    Dialogue("Nokia N79", "AT+CNMI=2,1,0,2", _answer("ERROR\r\n"), "ERROR", ()),
    # test_modem.py: signal, registration, SMSC unknown, SMS read in text and PDU mode.
    Dialogue("generic (test_modem.py)", "AT+CSQ", _answer("+CSQ: 18,99\r\n", "OK\r\n"), "OK",
             ("+CSQ: 18,99",)),
    Dialogue("generic (test_modem.py)", "AT+CREG?", _answer("+CREG: 0,1\r\n", "OK\r\n"), "OK",
             ("+CREG: 0,1",)),
    Dialogue("generic (test_modem.py)", "AT+CSCA?", _answer("+CMS ERROR: 330\r\n"),
             "+CMS ERROR: 330", ()),
    Dialogue("generic (test_modem.py)", "AT+CMGR=1",
             _answer('+CMGR: "REC UNREAD","+27748577604",,"13/01/28,14:51:42+08"\r\n',
                     "Hello raspberry pi\r\n", "OK\r\n"), "OK",
             ('+CMGR: "REC UNREAD","+27748577604",,"13/01/28,14:51:42+08"',
              "Hello raspberry pi")),
    Dialogue("generic (test_modem.py)", "AT+CMGR=0",
             _answer("+CMGR: 0,,35\r\n",
                     "07917248014000F3240B917247587706F400003110824115248012C8329BFD06C9C373B8"
                     "B82C97E741F034\r\n", "OK\r\n"), "OK",
             ("+CMGR: 0,,35",
              "07917248014000F3240B917247587706F400003110824115248012C8329BFD06C9C373B8B82C97E"
              "741F034")),
    Dialogue("generic (test_modem.py)", "AT+CMGR=3",
             _answer("+CMGR: 0,,24\r\n",
                     "07917248014000F506B70AA18092020000317071518590803170715185418000\r\n",
                     "OK\r\n"), "OK",
             ("+CMGR: 0,,24",
              "07917248014000F506B70AA18092020000317071518590803170715185418000")),
)

# AT+CMGS in PDU mode on the ZTE (test_modem.py, test_sendSmsPduMode on ZTE): unsolicited
# +ZDONR/+ZPASR before the prompt and again before the +CMGS answer.
ZTE_CMGS_BEFORE_PROMPT = (
    b'\r\n+ZDONR: "METEOR",272,3,"CS_ONLY","ROAM_OFF"\r\n\r\n+ZPASR: "UMTS"\r\n\r\n> \r\n'
)
ZTE_CMGS_AFTER_BODY = (
    b'\r\n+ZDONR: "METEOR",272,3,"CS_ONLY","ROAM_OFF"\r\n\r\n+ZPASR: "UMTS"\r\n'
    b'\r\n+ZDONR: "METEOR",272,3,"CS_PS","ROAM_OFF"\r\n\r\n+ZPASR: "UMTS"\r\n'
    b"\r\n+CMGS: 5\r\n\r\nOK\r\n"
)

# AT+CMGS with a delivery report requested (test_modem.py, test_sendSmsWithStatusReport): the
# prompt, the message reference, OK, then the +CDSI indication of the stored report.
CMGS_PROMPT = b"\r\n> \r\n"
CMGS_ANSWER_WITH_REPORT = b'\r\n+CMGS: 183\r\n\r\nOK\r\n\r\n+CDSI: "SM",3\r\n'
