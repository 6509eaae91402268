"""The read of the meters behind a concentrator (fep.protocols.gw3761.points), sans IO
against the simulated concentrator: points batched per request, records filed under each
meter's id, one outcome per point (read, no data, denied, not reached)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.trial import unittest

from fep.errors import ChannelError
from fep.model import IntervalBlock, PointRead, PointStatus, Reading
from fep.protocols.gw3761.client import ClientSettings, Send
from fep.protocols.gw3761.frames import Address, FrameDecoder
from fep.protocols.gw3761.points import PointsClient, current_items, daily_times
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.sim.concentrator import make_concentrator
from tests.protocols.gw3761.test_session import START, now, run

TZ = DEFAULT_TERMINAL_TZ
# 2024-02-29, terminal-local: its 00:00 in UTC, and the next day's.
DAY = datetime(2024, 2, 29, tzinfo=TZ).astimezone(UTC)
NEXT = DAY + timedelta(days=1)


def reads(count: int, **kw: object) -> list[PointRead]:
    return [PointRead(f"M{p}", p, **kw) for p in range(1, count + 1)]  # type: ignore[arg-type]


def client(points: list[PointRead]) -> PointsClient:
    return PointsClient(ClientSettings(Address("4403", 4), meter="DCU1"), points, now)


class PointsClientTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sim = make_concentrator(100, clock=lambda: START)

    def test_daily_and_curve_of_a_hundred_points_in_batches(self) -> None:
        c = client(reads(100, daily=(DAY,), ranges=((DAY, NEXT),)))
        run(c, self.sim, limit=1000)
        result = c.result()
        self.assertEqual({o.status for o in result.outcomes}, {PointStatus.READ})
        # Two batches of points (64 + 36), one daily and one curve request each.
        self.assertEqual(self.sim.requests, 4)
        blocks = [r for r in result.records if isinstance(r, IntervalBlock)]
        self.assertEqual(len(blocks), 100)
        for block in blocks:
            self.assertEqual((block.start, len(block.values)), (DAY, 96))
            self.assertNotIn(None, block.values)
            self.assertEqual(block.source, "DCU1")
        frozen = [r for r in result.records if isinstance(r, Reading)]
        self.assertEqual({r.meter_time for r in frozen}, {DAY})
        self.assertEqual({r.meter for r in frozen}, {f"M{p}" for p in range(1, 101)})
        by_meter = {o.meter: o.records for o in result.outcomes}
        self.assertEqual(by_meter["M7"], 1 + 5)  # the curve and five tariffs

    def test_current_values_by_default_energy_and_instantaneous(self) -> None:
        c = client(reads(3, current=True))
        run(c, self.sim)
        result = c.result()
        self.assertEqual({o.status for o in result.outcomes}, {PointStatus.READ})
        self.assertEqual({r.native_id for r in result.records}, {"0C:F129", "0C:F25"})
        self.assertEqual(self.sim.requests, 2)

    def test_items_keep_only_per_point_names(self) -> None:
        self.assertEqual(current_items(["0C:F129", "00010000", "0C:F2", "0E:F1"]),
                         ((0x0C, 129),))  # fmt: skip
        self.assertEqual(current_items(["00010000"]), ((0x0C, 129), (0x0C, 25)))

    def test_a_silent_meter_has_no_data_a_request_of_silent_ones_is_denied(self) -> None:
        self.sim.silent.add(self.sim.meters[1].address)
        points = [*reads(3, daily=(DAY,)), PointRead("M80", 80, daily=(NEXT,))]
        self.sim.silent.add(self.sim.meters[79].address)
        c = client(points)
        run(c, self.sim)
        result = {o.meter: o for o in c.result().outcomes}
        self.assertEqual(result["M1"].status, PointStatus.READ)
        self.assertEqual(result["M2"].status, PointStatus.NO_DATA)
        self.assertIn("no data for P2", result["M2"].error)
        self.assertEqual(result["M80"].status, PointStatus.DENIED)
        self.assertEqual(result["M80"].records, 0)

    def test_a_session_ended_midway_leaves_the_rest_unanswered(self) -> None:
        c = client(reads(100, daily=(DAY,)))
        decoder = FrameDecoder()
        (send,) = [a for a in c.start() if isinstance(a, Send)]
        for answer in self.sim.receive(send.data, decoder):
            c.receive(answer)
        lost = ChannelError("connection lost", route="tcp:x")
        result = c.result(lost)
        status = {o.meter: o.status for o in result.outcomes}
        self.assertEqual(status["M64"], PointStatus.READ)
        self.assertEqual(status["M65"], PointStatus.UNANSWERED)
        self.assertIs(result.error, lost)
        self.assertEqual(len(result.records), 64 * 5)

    def test_a_session_that_never_started_reads_nothing(self) -> None:
        refused = ChannelError("cannot connect", route="tcp:x")
        result = client(reads(2, current=True)).result(refused)
        self.assertEqual([o.status for o in result.outcomes], [PointStatus.UNANSWERED] * 2)
        self.assertEqual(result.outcomes[0].error, "not read: cannot connect")

    def test_daily_times_are_local_midnights(self) -> None:
        self.assertEqual(daily_times(TZ, DAY, NEXT), [DAY])
        self.assertEqual(daily_times(TZ, DAY + timedelta(hours=1), NEXT), [])
        self.assertEqual(daily_times(TZ, DAY, NEXT + timedelta(seconds=1)), [DAY, NEXT])


class HangUpFaultTests(unittest.TestCase):
    """The simulator's fault of a session lost midway: closed once, after N answers."""

    def test_the_connection_is_closed_once_after_n_answers(self) -> None:
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from fep.sim.concentrator import ConcentratorFactory

        sim = make_concentrator(3, clock=lambda: START)
        factory = ConcentratorFactory(sim, MemoryReactorClock(), hang_up_after=2)
        c = client(reads(3, current=True))
        (send,) = [a for a in c.start() if isinstance(a, Send)]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(send.data)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(send.data)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((factory.hang_ups, factory.hang_up_after), (1, 0))

    def test_the_command_line_offers_it(self) -> None:
        import contextlib
        import io

        from fep.sim.concentrator import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            main(["--help"])
        self.assertIn("--hang-up-after N", out.getvalue())
