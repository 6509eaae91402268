"""A DL/T 698.45 terminal's own traffic on a GPRS session (``Dlt698PushHandler``, the
protocol's IPushProtocol): login, heartbeat and logout answered on the connection, reports
stored and acknowledged only once the sink has them (a repeat acknowledged, not stored
again), filed under the meter the frame names, bad input counted while the session stays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.interfaces import IPushHandler, IPushProtocol
from fep.model import Meter, MeterEvent, Record
from fep.protocols.dlt698.apdu import (
    LinkResponse,
    LinkType,
    ReportNotification,
    ReportResponse,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.frames import Frame, FrameDecoder, Function, ServerAddress, control
from fep.protocols.dlt698.session import Dlt698Protocol
from fep.sim.dlt698 import SimulatedDlt698Meter
from tests.protocols.dlt698.test_terminal import link

TERMINAL = "000000009999"
CHILD = "000000000001"


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.pending: list[Deferred[None]] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.batches.append(list(records))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class Directory:
    def __init__(self, meters: list[Meter]) -> None:
        self.meters = meters

    def all(self) -> list[Meter]:
        return list(self.meters)


def report_frame(sim: SimulatedDlt698Meter, piid: int, address: str = TERMINAL) -> bytes:
    report: ReportNotification = sim.report_outage(piid=piid)
    sim.reports.clear()
    return Frame(control(Function.USER_DATA, from_server=True, client_started=False),
                 ServerAddress(address), 0, encode_apdu(report)).encode()


def answers(written: list[bytes]) -> list[object]:
    return [decode_apdu(f.data) for f in FrameDecoder().receive(b"".join(written))]


class PushHandlerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.terminal = Meter("T1", "dlt698", f"gprs:dlt698={TERMINAL}", address=TERMINAL)
        self.child = Meter("M1", "dlt698", "dlt698:T1", address=CHILD,
                           metadata={"concentrator": "T1"})
        self.sink = Sink()
        self.written: list[bytes] = []
        self.closed = 0
        protocol = Dlt698Protocol()
        verifyObject(IPushProtocol, protocol)
        self.handler = protocol.push_handler(
            self.terminal, self.sink, directory=Directory([self.terminal, self.child]),
            counters=None, source="gprs:dlt698=000000009999", close=self.close,
            reply=self.written.append)
        verifyObject(IPushHandler, self.handler)

    def close(self) -> None:
        self.closed += 1

    def test_login_heartbeat_logout_answered_with_feps_time(self) -> None:
        for kind in (LinkType.LOGIN, LinkType.HEARTBEAT, LinkType.LOGOUT):
            self.handler.data_received(link(kind, TERMINAL))
        got = answers(self.written)
        self.assertEqual(len(got), 3)
        for apdu in got:
            self.assertIsInstance(apdu, LinkResponse)
        self.assertEqual(self.handler.address, TERMINAL)
        self.assertEqual(self.sink.batches, [])
        self.assertEqual((self.handler.frames, self.handler.bad, self.closed), (0, 0, 0))

    def test_a_report_is_acknowledged_once_kept_and_a_repeat_is_not_stored_again(
            self) -> None:  # fmt: skip
        sim = SimulatedDlt698Meter(TERMINAL)
        self.handler.data_received(report_frame(sim, 5))
        self.assertEqual(len(self.sink.batches), 1)
        (events,) = self.sink.batches
        self.assertTrue(events and all(isinstance(r, MeterEvent) for r in events))
        self.assertEqual({r.meter for r in events}, {"T1"})
        # Not acknowledged before the sink has the records.
        self.assertEqual(self.written, [])
        # The same report again while it is being kept: one store, two acknowledgements.
        self.handler.data_received(report_frame(sim, 6))
        self.assertEqual(len(self.sink.batches), 1)
        self.sink.pending[0].callback(None)
        acks = answers(self.written)
        self.assertEqual([type(a) for a in acks], [ReportResponse, ReportResponse])
        self.assertEqual({a.piid for a in acks if isinstance(a, ReportResponse)}, {5, 6})
        # And once more after: acknowledged at once, still not stored again.
        self.handler.data_received(report_frame(sim, 7))
        self.assertEqual(len(self.sink.batches), 1)
        self.assertEqual(len(answers(self.written)), 3)
        self.assertEqual((self.handler.frames, self.handler.repeats), (3, 2))

    def test_a_report_naming_a_meter_behind_the_terminal_is_filed_under_it(self) -> None:
        self.handler.data_received(report_frame(SimulatedDlt698Meter(CHILD), 1, CHILD))
        self.assertEqual({r.meter for r in self.sink.batches[0]}, {"M1"})
        self.handler.data_received(report_frame(SimulatedDlt698Meter("000000000077"), 2,
                                                "000000000077"))
        # An address not in the meter list: the terminal's.
        self.assertEqual({r.meter for r in self.sink.batches[1]}, {"T1"})

    def test_a_report_the_sink_refuses_is_not_acknowledged(self) -> None:
        self.handler.data_received(report_frame(SimulatedDlt698Meter(TERMINAL), 5))
        # A repeat while it is being kept is not acknowledged either when it is refused.
        self.handler.data_received(report_frame(SimulatedDlt698Meter(TERMINAL), 4))
        self.sink.pending[0].errback(RuntimeError("store full"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.written, [])
        # Sent again, it is kept this time.
        self.handler.data_received(report_frame(SimulatedDlt698Meter(TERMINAL), 6))
        self.assertEqual(len(self.sink.batches), 2)
        self.sink.pending[1].callback(None)
        self.assertEqual(len(answers(self.written)), 1)

    def test_bad_input_is_counted_and_the_session_goes_on(self) -> None:
        good = link(LinkType.HEARTBEAT, TERMINAL)
        bad_fcs = good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:]
        self.handler.data_received(link(LinkType.LOGIN, TERMINAL))
        self.handler.data_received(bad_fcs)
        # An APDU no decoder knows, in a good frame.
        junk = Frame(control(Function.USER_DATA, from_server=True, client_started=False),
                     ServerAddress(TERMINAL), 0, b"\x88\x09\x01").encode()
        self.handler.data_received(junk)
        self.handler.data_received(good[:7])
        self.assertEqual(self.handler.pending(), 7)
        self.handler.data_received(good[7:])
        # The damaged frame (and the rest of its bytes, skipped) and the unknown APDU.
        self.assertEqual(self.handler.bad, 3)
        garbage = self.handler.garbage
        self.assertEqual(garbage, len(bad_fcs) - 1)
        # Line noise is bad input too; FE wake-up bytes are not.
        self.handler.data_received(b"\xfe\xfe\xfe\xfe" + link(LinkType.HEARTBEAT, TERMINAL))
        self.assertEqual((self.handler.bad, self.handler.garbage), (3, garbage))
        self.handler.data_received(b"noise" + link(LinkType.HEARTBEAT, TERMINAL))
        self.assertEqual((self.handler.bad, self.handler.garbage), (4, garbage + 5))
        self.assertEqual(self.closed, 0)
        self.assertEqual([type(a) for a in answers(self.written)], [LinkResponse] * 4)

    def test_bytes_of_an_unfinished_frame_are_handed_to_a_pull(self) -> None:
        good = link(LinkType.HEARTBEAT, TERMINAL)
        self.handler.data_received(good[:10])
        self.assertEqual(self.handler.take_buffered(), good[:10])
        self.assertEqual(self.handler.pending(), 0)

    def test_reports_are_read_in_the_meters_zone(self) -> None:
        sim = SimulatedDlt698Meter(TERMINAL, clock=lambda: 1_765_000_000.0)
        self.handler.data_received(report_frame(sim, 1))
        starts = sorted(r.time for r in self.sink.batches[0] if isinstance(r, MeterEvent))
        self.assertTrue(starts)
        self.assertTrue(all(t.tzinfo is not None and t < datetime(2030, 1, 1, tzinfo=UTC)
                            for t in starts))
