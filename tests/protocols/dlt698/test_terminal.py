"""A terminal's own traffic (sans-IO ``TerminalLink``): its login, heartbeats and logout
answered with fep's time, its reports turned into records with the acknowledgement to send
once they are kept, and everything else left to the read client."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from twisted.trial import unittest

from fep.model import EventKind, MeterEvent, Reading
from fep.protocols.dlt698.apdu import (
    LinkRequest,
    LinkResponse,
    LinkType,
    ReportResponse,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.client import DEFAULT_METER_TZ
from fep.protocols.dlt698.data import OAD
from fep.protocols.dlt698.frames import Frame, FrameDecoder, Function, ServerAddress, control
from fep.protocols.dlt698.terminal import (
    Heartbeat,
    LoggedIn,
    LoggedOut,
    Noise,
    ReportReceived,
    Send,
    TerminalLink,
    Unexpected,
)
from fep.sim.dlt698 import SimulatedDlt698Meter
from tests.protocols.dlt698.published import FRAMES

NOW = datetime(2026, 12, 7, 6, 29, 38, tzinfo=UTC)  # 14:29:38 on the terminals' UTC+8 clock


def link(kind: LinkType, address: str = "000000123456", piid: int = 1) -> bytes:
    request = LinkRequest(piid, kind, 300, (2026, 12, 7, 1, 14, 29, 40, 0))
    frame = Frame(control(Function.LINK, from_server=True, client_started=False),
                  ServerAddress(address), 0, encode_apdu(request))
    return frame.encode()


def answer_of(action: object) -> LinkResponse:
    assert isinstance(action, Send)
    (frame,) = FrameDecoder().receive(action.data)
    assert frame.function == Function.LINK and not frame.from_server
    apdu = decode_apdu(frame.data)
    assert isinstance(apdu, LinkResponse)
    return apdu


class LinkTests(unittest.TestCase):
    def terminal(self) -> TerminalLink:
        return TerminalLink(tz=DEFAULT_METER_TZ, now=lambda: NOW)

    def test_login_heartbeat_logout(self) -> None:
        t = self.terminal()
        send, logged_in = t.receive(link(LinkType.LOGIN))
        self.assertEqual(logged_in, LoggedIn("000000123456", 300))
        answer = answer_of(send)
        self.assertEqual(answer.result, 0x80)  # success, the terminal's clock trusted
        self.assertEqual(answer.received_time[:7], (2026, 12, 7, 1, 14, 29, 38))
        (again,) = t.receive(link(LinkType.LOGIN))  # a second login: answered only
        self.assertIsInstance(again, Send)
        send, beat = t.receive(link(LinkType.HEARTBEAT, piid=2))
        self.assertEqual((beat, answer_of(send).piid), (Heartbeat("000000123456"), 2))
        send, out = t.receive(link(LinkType.LOGOUT))
        self.assertEqual(out, LoggedOut("000000123456"))
        self.assertEqual((t.logins, t.heartbeats), (2, 1))
        self.assertEqual(t.address, ServerAddress("000000123456"))

    def test_the_dlt698_packages_login_is_answered(self) -> None:
        # A login the dlt698 package's terminal sent (tests/fixtures/dlt698): server
        # address 00, heartbeat 5 s.
        t = self.terminal()
        send, logged_in = t.receive(FRAMES["frame_peer_login"])
        self.assertEqual(logged_in, LoggedIn("00", 5))
        self.assertEqual(answer_of(send).request_time, (2026, 12, 7, 1, 14, 29, 38, 700))

    def test_noise_and_other_frames(self) -> None:
        t = self.terminal()
        bad = bytearray(link(LinkType.HEARTBEAT))
        bad[-3] ^= 1
        actions = t.receive(b"\xfe\xfe" + bytes(bad) + FRAMES["frame_peer_get_frequency_response"])
        self.assertIsInstance(actions[0], Noise)
        self.assertIsInstance(actions[1], Unexpected)  # a GET answer: the read client's
        self.assertEqual(t.noise, 1)


class ReportTests(unittest.TestCase):
    def test_a_report_becomes_records_and_its_acknowledgement(self) -> None:
        sim = SimulatedDlt698Meter("000000123456", clock=NOW.timestamp)
        report = sim.report_outage(piid=9)
        frame = Frame(control(from_server=True, client_started=False), sim.server, 0,
                      encode_apdu(report))
        t = TerminalLink(tz=DEFAULT_METER_TZ, now=lambda: NOW,
                         meters={"000000123456": "t1"}.get)
        (received,) = t.receive(frame.encode())
        assert isinstance(received, ReportReceived)
        self.assertEqual(received.meter, "t1")
        self.assertEqual([e.kind for e in received.records if isinstance(e, MeterEvent)],
                         [EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED])
        (ack,) = FrameDecoder().receive(received.ack)
        # REPORT-Response to a record list (choice 2), naming the record object.
        self.assertEqual(decode_apdu(ack.data), ReportResponse(9, (OAD(0x3011, 2),), kind=2))
        self.assertEqual(ack.server, sim.server)
        self.assertEqual(t.reports, 1)

    def test_report_values_scaled_like_a_read(self) -> None:
        from fep.protocols.dlt698.apdu import ReportNotification, ResultNormal
        from fep.protocols.dlt698.data import Data, DataType

        report = ReportNotification(3, (ResultNormal(OAD(0x0010, 2), Data.array(
            [Data(DataType.DOUBLE_LONG_UNSIGNED, 987654)])),))  # fmt: skip
        frame = Frame(control(from_server=True, client_started=False),
                      ServerAddress("000000000042"), 0, encode_apdu(report))
        (received,) = TerminalLink(tz=DEFAULT_METER_TZ, now=lambda: NOW).receive(frame.encode())
        assert isinstance(received, ReportReceived)
        (reading,) = received.records
        assert isinstance(reading, Reading)
        self.assertEqual((reading.meter, reading.value), ("000000000042", Decimal("9876.54")))
