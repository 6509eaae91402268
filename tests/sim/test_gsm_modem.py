"""The simulated GSM modem and network: AT answers, PDU and text mode, the store, +CMTI,
delivery reports, storage full, field devices; over a socat pty pair too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from fep.channels.modem.pdu import (
    Address,
    Deliver,
    StatusReport,
    Submit,
    UserData,
    decode_hex_pdu,
    encode_pdu,
    submit_parts,
    tpdu_length,
)
from fep.sim.gsm_modem import (
    GsmModemEmulator,
    GsmNetwork,
    SentMessage,
    SimulatedFieldDevice,
    serve_pty,
    te_decode,
    te_encode,
    text_timestamp,
)
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor
NOW = datetime(2024, 5, 17, 10, 30, 0, tzinfo=UTC)
MODEM = "+491700000001"
DEVICE = "+491510000009"


class Line:
    """A StringTransport on a modem: ``at("AT+CSQ")`` returns what the modem wrote back."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock()
        self.network = GsmNetwork(self.clock, clock=lambda: NOW, zone=timezone(timedelta(hours=2)))
        self.modem = GsmModemEmulator(MODEM, **kwargs)
        self.network.attach(self.modem)
        self.transport = StringTransport()
        self.modem.makeConnection(self.transport)

    def out(self) -> str:
        data = self.transport.value().decode("latin-1")
        self.transport.clear()
        return data

    def at(self, command: str, *, echo_off: bool = True) -> str:
        if echo_off:
            self.modem.echo = False
        self.transport.clear()
        self.modem.dataReceived(command.encode("latin-1") + b"\r")
        return self.out()

    def lines(self, command: str) -> list[str]:
        return [line for line in self.at(command).split("\r\n") if line]

    def send_body(self, body: str, end: bytes = b"\x1a") -> str:
        self.modem.dataReceived(body.encode("latin-1") + end)
        return self.out()

    def settle(self) -> str:
        self.clock.advance(0)
        self.clock.advance(0)
        return self.out()


class CommandTests(unittest.TestCase):
    def test_echo_is_on_after_power_up_and_off_after_ate0(self) -> None:
        line = Line()
        self.assertEqual(line.at("AT", echo_off=False), "AT\r\r\nOK\r\n")
        line.at("ATE0", echo_off=False)
        self.assertEqual(line.at("AT", echo_off=False), "\r\nOK\r\n")

    def test_numeric_result_codes_after_atv0(self) -> None:
        line = Line()
        self.assertEqual(line.at("ATV0"), "0\r")
        self.assertEqual(line.at("AT+NOPE"), "4\r")
        self.assertEqual(line.at("ATV1"), "\r\nOK\r\n")

    def test_quiet_mode_sends_no_result_code(self) -> None:
        line = Line()
        self.assertEqual(line.at("ATQ1"), "")

    def test_identification(self) -> None:
        line = Line()
        self.assertEqual(line.lines("AT+CGMI"), ["fep", "OK"])
        self.assertEqual(line.lines("AT+CGMM"), ["Simulated GSM modem", "OK"])
        self.assertEqual(line.lines("AT+CGSN"), ["490154203237518", "OK"])
        self.assertEqual(line.lines("AT+CIMI"), ["262011234567890", "OK"])
        self.assertEqual(line.lines("AT+CNUM"), [f'+CNUM: "","{MODEM}",145', "OK"])

    def test_network_queries(self) -> None:
        line = Line()
        self.assertEqual(line.lines("AT+CREG?"), ["+CREG: 0,1", "OK"])
        self.assertEqual(line.lines("AT+CSQ"), ["+CSQ: 20,99", "OK"])
        self.assertEqual(line.lines("AT+COPS?"), ['+COPS: 0,0,"fep mobile",0', "OK"])
        self.assertEqual(line.lines("AT+CPIN?"), ["+CPIN: READY", "OK"])

    def test_unregistered_modem_has_no_signal(self) -> None:
        line = Line(registered=False)
        self.assertEqual(line.lines("AT+CREG?"), ["+CREG: 0,0", "OK"])
        self.assertEqual(line.lines("AT+CSQ"), ["+CSQ: 99,99", "OK"])

    def test_sim_pin(self) -> None:
        line = Line(pin="1234")
        line.at("AT+CMEE=1")
        self.assertEqual(line.lines("AT+CPIN?"), ["+CPIN: SIM PIN", "OK"])
        self.assertEqual(line.lines("AT+CMGL=4"), ["+CMS ERROR: 311"])
        self.assertEqual(line.lines('AT+CPIN="0000"'), ["+CME ERROR: 16"])
        self.assertEqual(line.lines('AT+CPIN="1234"'), ["OK"])
        self.assertEqual(line.lines("AT+CPIN?"), ["+CPIN: READY", "OK"])

    def test_error_reporting_levels(self) -> None:
        line = Line()
        self.assertEqual(line.lines("AT+CMGR=99"), ["ERROR"])
        line.at("AT+CMEE=1")
        self.assertEqual(line.lines("AT+CMGR=99"), ["+CMS ERROR: 321"])
        line.at("AT+CMEE=2")
        self.assertEqual(line.lines("AT+CMGR=99"), ["+CMS ERROR: invalid memory index"])

    def test_several_commands_on_one_line(self) -> None:
        line = Line()
        self.assertEqual(line.lines("ATE0V1;+CMGF=1;+CMGF?"), ["+CMGF: 1", "OK"])
        self.assertEqual(line.lines("AT+CSCS?;+CSDH?"), ['+CSCS: "GSM"', "+CSDH: 0", "OK"])

    def test_an_error_stops_the_line(self) -> None:
        line = Line()
        self.assertEqual(line.lines("AT+CMGF=1;+BOGUS;+CMGF=0"), ["ERROR"])
        self.assertEqual(line.lines("AT+CMGF?"), ["+CMGF: 1", "OK"])

    def test_atz_restores_the_power_up_profile(self) -> None:
        line = Line()
        line.at("AT+CMGF=1;+CNMI=2,1")
        line.at("ATZ")
        self.assertEqual(line.lines("AT+CMGF?;+CNMI?"), ["+CMGF: 0", "+CNMI: 0,0,0,0,0", "OK"])

    def test_clac_lists_the_sms_commands(self) -> None:
        listed = Line().lines("AT+CLAC")
        self.assertIn("AT+CMGS", listed)
        self.assertIn("AT+CPMS", listed)

    def test_dial_is_refused(self) -> None:
        self.assertEqual(Line().lines("ATD+4930123;"), ["ERROR"])


class PduModeTests(unittest.TestCase):
    def test_cmgs_prompts_sends_and_answers_with_the_reference(self) -> None:
        line = Line()
        (submit,) = submit_parts(DEVICE, "STATUS?")
        pdu = encode_pdu(submit)
        self.assertEqual(line.at(f"AT+CMGS={tpdu_length(pdu)}"), "\r\n> ")
        self.assertEqual(line.send_body(pdu.hex().upper()), "\r\n+CMGS: 1\r\n\r\nOK\r\n")
        (sent,) = line.network.sent
        self.assertEqual((sent.sender, sent.destination, sent.reference), (MODEM, DEVICE, 1))
        self.assertEqual(sent.submit.body, "STATUS?")

    def test_wrong_length_is_cms_304(self) -> None:
        line = Line()
        line.at("AT+CMEE=1")
        pdu = encode_pdu(submit_parts(DEVICE, "x")[0])
        line.at(f"AT+CMGS={tpdu_length(pdu) + 1}")
        self.assertEqual(line.send_body(pdu.hex()), "\r\n+CMS ERROR: 304\r\n")
        self.assertEqual(line.network.sent, [])

    def test_garbage_pdu_is_cms_304(self) -> None:
        line = Line()
        line.at("AT+CMEE=1")
        line.at("AT+CMGS=10")
        self.assertEqual(line.send_body("0011ZZ"), "\r\n+CMS ERROR: 304\r\n")

    def test_escape_cancels_the_message(self) -> None:
        line = Line()
        line.at("AT+CMGS=10")
        self.assertEqual(line.send_body("0011", end=b"\x1b"), "\r\nOK\r\n")
        self.assertEqual(line.network.sent, [])

    def test_scripted_send_failure(self) -> None:
        line = Line()
        line.at("AT+CMEE=1")
        line.modem.fail_sends.append(331)
        pdu = encode_pdu(submit_parts(DEVICE, "x")[0])
        line.at(f"AT+CMGS={tpdu_length(pdu)}")
        self.assertEqual(line.send_body(pdu.hex()), "\r\n+CMS ERROR: 331\r\n")

    def test_no_network_no_send(self) -> None:
        line = Line(registered=False)
        line.at("AT+CMEE=1")
        pdu = encode_pdu(submit_parts(DEVICE, "x")[0])
        line.at(f"AT+CMGS={tpdu_length(pdu)}")
        self.assertEqual(line.send_body(pdu.hex()), "\r\n+CMS ERROR: 331\r\n")

    def test_delivered_sms_is_stored_and_indicated_with_cmti(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,0,0")
        line.network.deliver(MODEM, "ALARM door open", DEVICE)
        self.assertEqual(line.settle(), '\r\n+CMTI: "SM",1\r\n')
        header, pdu, ok = line.lines("AT+CMGR=1")
        self.assertEqual(ok, "OK")
        self.assertTrue(header.startswith("+CMGR: 0,,"))
        deliver = decode_hex_pdu(pdu)
        assert isinstance(deliver, Deliver)
        self.assertEqual((str(deliver.originator), deliver.body), (DEVICE, "ALARM door open"))
        self.assertEqual(deliver.timestamp, NOW)
        self.assertEqual(int(header.rsplit(",", 1)[1]), tpdu_length(bytes.fromhex(pdu)))
        # Read once: now REC READ.
        self.assertTrue(line.lines("AT+CMGR=1")[0].startswith("+CMGR: 1,,"))

    def test_no_indication_without_cnmi(self) -> None:
        line = Line()
        line.network.deliver(MODEM, "quiet", DEVICE)
        self.assertEqual(line.settle(), "")
        self.assertEqual(line.lines("AT+CPMS?")[0], '+CPMS: "SM",1,20,"SM",1,20,"SM",1,20')

    def test_cnmi_mt2_routes_the_message_directly(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,2,0,0,0")
        line.network.deliver(MODEM, "direct", DEVICE)
        header, pdu = [x for x in line.settle().split("\r\n") if x]
        self.assertTrue(header.startswith("+CMT: ,"))
        self.assertEqual(decode_hex_pdu(pdu).user_data.body, "direct")  # type: ignore[union-attr]
        self.assertEqual(line.modem.stores["SM"].used, 0)

    def test_cmgl_lists_by_status_and_marks_read(self) -> None:
        line = Line()
        for text in ("one", "two"):
            line.network.deliver(MODEM, text, DEVICE)
        line.settle()
        line.at("AT+CMGR=1")
        unread = line.lines("AT+CMGL=0")
        self.assertEqual(unread[0].split(",")[:2], ["+CMGL: 2", "0"])
        self.assertEqual(len(unread), 3)
        everything = line.lines("AT+CMGL=4")
        self.assertEqual([x.split(",")[1] for x in everything if x.startswith("+CMGL")], ["1", "1"])

    def test_cmgd_deletes_one_or_by_flag(self) -> None:
        line = Line()
        for text in ("one", "two", "three"):
            line.network.deliver(MODEM, text, DEVICE)
        line.settle()
        line.at("AT+CMGR=2")
        self.assertEqual(line.lines("AT+CMGD=1"), ["OK"])
        self.assertEqual(sorted(line.modem.stores["SM"].slots), [2, 3])
        line.at("AT+CMGD=1,1")  # every read message
        self.assertEqual(sorted(line.modem.stores["SM"].slots), [3])
        line.at("AT+CMGD=1,4")
        self.assertEqual(line.modem.stores["SM"].used, 0)

    def test_concatenated_delivery_is_stored_part_by_part(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,0,0")
        parts = line.network.deliver(MODEM, "x" * 300, DEVICE)
        self.assertEqual(len(parts), 2)
        self.assertEqual(line.settle().count("+CMTI"), 2)
        pdus = [x for x in line.lines("AT+CMGL=4") if not x.startswith(("+CMGL", "OK"))]
        concats = [decode_hex_pdu(p).user_data.concat for p in pdus]  # type: ignore[union-attr]
        self.assertEqual([(c.total, c.sequence) for c in concats if c], [(2, 1), (2, 2)])

    def test_cpms_selects_memories(self) -> None:
        line = Line(capacity=5)
        self.assertEqual(line.lines('AT+CPMS="ME","ME","ME"'), ["+CPMS: 0,5,0,5,0,5", "OK"])
        line.at("AT+CNMI=2,1,0,0,0")
        line.network.deliver(MODEM, "to ME", DEVICE)
        self.assertEqual(line.settle(), '\r\n+CMTI: "ME",1\r\n')
        self.assertEqual(
            line.lines("AT+CPMS=?"), ['+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")', "OK"]
        )


class DeliveryReportTests(unittest.TestCase):
    def send(self, line: Line, text: str = "hello", report: bool = True) -> str:
        (submit,) = submit_parts(DEVICE, text, status_report=report)
        pdu = encode_pdu(submit)
        line.at(f"AT+CMGS={tpdu_length(pdu)}")
        return line.send_body(pdu.hex())

    def test_report_stored_and_indicated_with_cdsi(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,2,0")
        self.send(line)
        self.assertEqual(line.settle(), '\r\n+CDSI: "SM",1\r\n')
        _, pdu, _ = line.lines("AT+CMGR=1")
        report = decode_hex_pdu(pdu)
        assert isinstance(report, StatusReport)
        self.assertEqual((report.reference, str(report.recipient), report.status), (1, DEVICE, 0))

    def test_report_routed_directly_with_cds(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,1,0")
        line.network.report_status[DEVICE] = 0x46
        self.send(line)
        header, pdu = [x for x in line.settle().split("\r\n") if x]
        self.assertTrue(header.startswith("+CDS: "))
        report = decode_hex_pdu(pdu)
        assert isinstance(report, StatusReport)
        self.assertEqual(report.status, 0x46)

    def test_no_report_unless_asked(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,2,0")
        self.send(line, report=False)
        self.assertEqual(line.settle(), "")

    def test_text_mode_report_line(self) -> None:
        line = Line()
        line.at("AT+CMGF=1;+CNMI=2,1,0,1,0;+CSMP=49,167,0,0")
        line.at(f'AT+CMGS="{DEVICE}"')
        line.send_body("hi")
        self.assertEqual(
            line.settle(),
            f'\r\n+CDS: 6,1,"{DEVICE}",145,"24/05/17,12:30:00+08","24/05/17,12:30:00+08",0\r\n',
        )


class StorageFullTests(unittest.TestCase):
    def test_full_store_holds_messages_at_the_network_until_room_is_made(self) -> None:
        line = Line(capacity=2)
        line.at("AT+CNMI=2,1,0,0,0;+CMER=3,0,0,1")
        for text in ("one", "two", "three"):
            line.network.deliver(MODEM, text, DEVICE)
        out = line.settle()
        self.assertEqual(out.count("+CMTI"), 2)
        self.assertIn("+CIEV: 5,1", out)
        self.assertEqual(len(line.network.pending_for(MODEM)), 1)
        self.assertEqual(line.lines("AT+CIND?"), ["+CIND: 5,3,1,0,1", "OK"])
        self.assertEqual(line.at("AT+CMGD=1"), "\r\nOK\r\n")
        out = line.settle()
        self.assertIn("+CIEV: 5,0", out)
        self.assertIn('+CMTI: "SM",1', out)
        self.assertEqual(line.network.pending_for(MODEM), [])
        _, pdu, _ = line.lines("AT+CMGR=1")
        self.assertEqual(decode_hex_pdu(pdu).user_data.body, "three")  # type: ignore[union-attr]


class TextModeTests(unittest.TestCase):
    def test_text_send_uses_csmp_and_the_te_character_set(self) -> None:
        line = Line()
        line.at("AT+CMGF=1")
        self.assertEqual(line.at(f'AT+CMGS="{DEVICE}",145'), "\r\n> ")
        self.assertEqual(line.send_body("RELAY ON"), "\r\n+CMGS: 1\r\n\r\nOK\r\n")
        (sent,) = line.network.sent
        self.assertEqual((sent.destination, sent.submit.body), (DEVICE, "RELAY ON"))
        self.assertEqual(sent.submit.validity, timedelta(days=1))  # CSMP vp 167: 24 hours

    def test_ucs2_character_set_carries_hex(self) -> None:
        line = Line()
        line.at('AT+CMGF=1;+CSCS="UCS2";+CSMP=17,167,0,8')
        line.at(f'AT+CMGS="{te_encode(DEVICE, "UCS2")}"')
        line.send_body(te_encode("Zähler", "UCS2"))
        self.assertEqual(line.network.sent[0].submit.body, "Zähler")

    def test_body_lines_are_joined_with_line_feeds(self) -> None:
        line = Line()
        line.at("AT+CMGF=1")
        line.at(f'AT+CMGS="{DEVICE}"')
        self.assertEqual(line.send_body("line 1", end=b"\r"), "\n> ")
        line.send_body("line 2")
        self.assertEqual(line.network.sent[0].submit.body, "line 1\nline 2")

    def test_cmgr_in_text_mode_with_and_without_details(self) -> None:
        line = Line()
        line.at("AT+CMGF=1")
        line.network.deliver(MODEM, "ALARM 3", DEVICE)
        line.settle()
        self.assertEqual(
            line.lines("AT+CMGR=1"),
            [f'+CMGR: "REC UNREAD","{DEVICE}",,"24/05/17,12:30:00+08"', "ALARM 3", "OK"],
        )
        line.at("AT+CSDH=1")
        self.assertEqual(
            line.lines("AT+CMGR=1")[0],
            f'+CMGR: "REC READ","{DEVICE}",,"24/05/17,12:30:00+08",145,4,0,0,"+491710760000",145,7',
        )

    def test_ucs2_message_is_shown_as_hex(self) -> None:
        line = Line()
        line.at("AT+CMGF=1;+CSDH=1")
        line.network.deliver(MODEM, "Störung ©", DEVICE)
        line.settle()
        header, data, _ = line.lines("AT+CMGR=1")
        # stat, oa, alpha, scts (date, time), tooa, fo, pid, dcs
        self.assertEqual(header.split(",")[8], "8")
        self.assertEqual(bytes.fromhex(data).decode("utf-16-be"), "Störung ©")

    def test_cmgl_all_in_text_mode(self) -> None:
        line = Line()
        line.at("AT+CMGF=1")
        line.network.deliver(MODEM, "a", DEVICE)
        line.network.deliver(MODEM, "b", DEVICE)
        line.settle()
        listed = line.lines('AT+CMGL="ALL"')
        self.assertEqual(listed[0], f'+CMGL: 1,"REC UNREAD","{DEVICE}",,"24/05/17,12:30:00+08"')
        self.assertEqual(listed[1::2][:2], ["a", "b"])

    def test_timestamp_and_character_set_helpers(self) -> None:
        self.assertEqual(
            text_timestamp(datetime(2007, 4, 12, 23, 25, 42, tzinfo=timezone(-timedelta(hours=8)))),
            "07/04/12,23:25:42-32",
        )
        self.assertEqual(te_encode("@£", "GSM"), "\x00\x01")
        self.assertEqual(te_decode("\x00\x01", "GSM"), "@£")
        self.assertEqual(te_encode("ж", "UCS2"), "0436")


class FieldDeviceTests(unittest.TestCase):
    def send_text(self, line: Line, to: str, text: str) -> None:
        for submit in submit_parts(to, text, reference=5):
            pdu = encode_pdu(submit)
            line.at(f"AT+CMGS={tpdu_length(pdu)}")
            line.send_body(pdu.hex())

    def test_device_answers_status_query_through_the_network(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,0,0")
        device = SimulatedFieldDevice(line.network, DEVICE, replies={"STATUS?": "STATUS OK 12.1V"})
        self.send_text(line, DEVICE, "STATUS?")
        self.assertIn("+CMTI", line.settle())
        self.assertEqual([m.text for m in device.received], ["STATUS?"])
        _, pdu, _ = line.lines("AT+CMGR=1")
        self.assertEqual(decode_hex_pdu(pdu).user_data.body, "STATUS OK 12.1V")  # type: ignore[union-attr]

    def test_wakeup_text_runs_the_hook(self) -> None:
        line = Line()
        woken: list[tuple[SimulatedFieldDevice, SentMessage]] = []
        device = SimulatedFieldDevice(
            line.network,
            DEVICE,
            wakeup_text="CONNECT GPRS",
            on_wakeup=lambda d, m: woken.append((d, m)),
        )
        self.send_text(line, DEVICE, "connect gprs")
        line.settle()
        self.assertEqual(device.wakeups, 1)
        self.assertEqual(woken[0][1].sender, MODEM)

    def test_long_message_reaches_the_device_joined(self) -> None:
        line = Line()
        device = SimulatedFieldDevice(line.network, DEVICE)
        self.send_text(line, DEVICE, "CONFIG " + "x" * 300)
        line.settle()
        self.assertEqual(len(line.network.sent), 3)
        self.assertEqual([m.text for m in device.received], ["CONFIG " + "x" * 300])
        self.assertEqual(len(device.received[0].parts), 3)

    def test_device_alarm_reaches_the_modem(self) -> None:
        line = Line()
        line.at("AT+CNMI=2,1,0,0,0")
        device = SimulatedFieldDevice(line.network, DEVICE)
        device.send(MODEM, "ALARM tamper")
        self.assertEqual(line.settle(), '\r\n+CMTI: "SM",1\r\n')


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.waiting: tuple[bytes, Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.waiting and self.waiting[0] in self.data:
            d = self.waiting[1]
            self.waiting = None
            d.callback(self.data)

    def until(self, marker: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if marker in self.data:
            d.callback(self.data)
        else:
            self.waiting = (marker, d)
        return d


class PtyTests(unittest.TestCase):
    @inlineCallbacks
    def test_send_and_receive_over_a_socat_pty_pair(self) -> Any:
        from fep.channels.serialport import FepSerialPort, SerialSettings

        a, b = yield socat_pty_pair(self)
        network = GsmNetwork(reactor)
        modem = GsmModemEmulator(MODEM)
        network.attach(modem)
        port = serve_pty(reactor, a, modem)
        self.addCleanup(port.loseConnection)
        client = Collect()
        line = SerialSettings(b, baudrate=115200, bytesize=8, parity="N")
        cport = FepSerialPort(client, line, reactor)
        self.addCleanup(cport.loseConnection)
        cport.write(b"ATE0;+CMGF=0;+CNMI=2,1,0,0,0\r")
        yield client.until(b"OK\r\n")
        client.data = b""
        pdu = encode_pdu(Submit(Address.parse(DEVICE), UserData("over the pty")))
        cport.write(f"AT+CMGS={tpdu_length(pdu)}\r".encode())
        yield client.until(b"> ")
        cport.write(pdu.hex().encode() + b"\x1a")
        yield client.until(b"OK\r\n")
        self.assertIn(b"+CMGS: 1", client.data)
        self.assertEqual(network.sent[0].submit.body, "over the pty")
        client.data = b""
        network.deliver(MODEM, "back", DEVICE)
        yield client.until(b'+CMTI: "SM",1\r\n')
        yield deferLater(reactor, 0, lambda: None)
