"""Acceptance (issue 6): one polling cycle of 20 legacy sites through a pool of 3 emulated
modems on socat ptys. Every site is read; scripted BUSY, NO ANSWER and a carrier lost
mid-call are retried per policy; the cycle's wall time is compared with the total call time
divided by 3 (printed); the pool's call statistics are stored and read back per line and per
site."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from fep.channels.modem.calls import ModemCallLog
from fep.channels.modem.dialup import DialSettings, RetryPolicy
from fep.channels.modem.stats import CallOutcome, call_stats
from fep.model import Meter, Reading
from fep.protocols.dlt645.session import Dlt645Protocol
from fep.protocols.iec62056_21.session import IecReadoutProtocol
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
from fep.sim.hayes import Outcome, Scripted
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from fep.store.sqlite import SqliteStore
from tests.channels.modem.emulated import FEP_GUARD, emulated_pool, new_exchange, reactor

SITES = 20
LINES = 3
# Simulated call set-up (ringing, handshake) and meter answer times: short calls.
RING = 0.15
ANSWER_DELAY = 0.05


def site_number(i: int) -> str:
    return f"+54114000{i:04d}"


def meters() -> list[Meter]:
    found = []
    for i in range(SITES):
        if i % 3 == 2:
            found.append(Meter(id=f"site{i:02d}", protocol="dlt645",
                               route=f"dialup:{site_number(i)}", address=f"{500000 + i:012d}"))
        else:
            found.append(Meter(id=f"site{i:02d}", protocol="iec62056-21",
                               route=f"dialup:{site_number(i)}", address=f"{20000000 + i}"))
    return found


def subscriber(meter: Meter) -> Any:
    if meter.protocol == "dlt645":
        return Dlt645BusFactory([SimulatedDlt645Meter(address=meter.address or "")], reactor,
                                answer_delay=ANSWER_DELAY)
    return IecMeterServerFactory([SimulatedIecMeter(address=meter.address or "")], reactor,
                                 answer_delay=ANSWER_DELAY)


class PollingCycleTests(unittest.TestCase):
    timeout = 120

    async def test_twenty_sites_through_three_modems(self) -> None:
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)

        exchange = new_exchange(ring_time=RING)
        fleet = meters()
        for meter in fleet:
            exchange.add(site_number(int(meter.id[4:])), subscriber(meter))
        busy, no_answer, dropped = fleet[3], fleet[7], fleet[11]
        exchange.script(site_number(3), Outcome.BUSY)
        exchange.script(site_number(7), Outcome.NO_ANSWER)
        # Carrier lost 0.1 s into the session: the meter is still answering.
        exchange.script(site_number(11), Scripted(Outcome.CONNECT, drop_after=0.1))

        policy = RetryPolicy(busy_delay=0.2, busy_retries=2, backoff=0.4, backoff_factor=2,
                             retries=2)
        pool, modems = await emulated_pool(
            self, exchange, LINES, policy=policy, store=store,
            dial=DialSettings(guard=FEP_GUARD, dial_timeout=5.0, hangup_timeout=1.0),
        )
        protocols = {"dlt645": Dlt645Protocol(), "iec62056-21": IecReadoutProtocol()}

        def job(meter: Meter) -> Any:
            number = meter.route.removeprefix("dialup:")

            def session(endpoint: Any) -> Any:
                return protocols[meter.protocol].read(reactor, endpoint, meter, 5.0)

            return pool.call(number, session, site=meter.id, route=meter.route)

        started = time.monotonic()
        results = await gatherResults([job(meter) for meter in fleet], consumeErrors=True)
        wall = time.monotonic() - started
        records = [record for found in results for record in found]
        await store.write(records)
        await pool.flush()

        # Every site read, into the store.
        for meter in fleet:
            readings = await store.readings(meter.id)
            self.assertTrue(readings, meter.id)
            self.assertTrue(all(isinstance(r, Reading) for r in readings))

        # Scripted failures retried per policy; the others connected at once.
        calls = list(pool.calls)
        by_site: dict[str, list[CallOutcome]] = {}
        for call in calls:
            by_site.setdefault(call.site, []).append(call.outcome)
        self.assertEqual(by_site[busy.id], [CallOutcome.BUSY, CallOutcome.COMPLETED])
        self.assertEqual(by_site[no_answer.id], [CallOutcome.NO_ANSWER, CallOutcome.COMPLETED])
        self.assertEqual(by_site[dropped.id],
                         [CallOutcome.CARRIER_LOST, CallOutcome.COMPLETED])
        others = [m.id for m in fleet if m not in (busy, no_answer, dropped)]
        for site in others:
            self.assertEqual(by_site[site], [CallOutcome.COMPLETED], site)

        # Retries waited at least their policy delay after the failed attempt ended.
        for meter, delay in ((busy, 0.2), (no_answer, 0.4), (dropped, 0.4)):
            first, second = [c for c in calls if c.site == meter.id]
            gap = (second.started - first.started).total_seconds() - first.seconds
            self.assertGreaterEqual(gap, delay - 0.02, meter.id)

        # Three lines, one call each at a time, all of them used.
        self.assertEqual(pool.most_active, LINES)
        self.assertEqual({call.line for call in calls}, {"m1", "m2", "m3"})
        self.assertEqual([m.hangups for m in modems],
                         [sum(1 for c in calls if c.line == m.name and c.outcome.connected)
                          for m in modems])

        # Wall time against total call time / lines.
        total = sum(call.seconds for call in calls)
        ideal = total / LINES
        print(
            f"\npolling cycle: {SITES} sites, {len(calls)} calls on {LINES} modems; "
            f"total call time {total:.2f} s, / {LINES} = {ideal:.2f} s; "
            f"wall time {wall:.2f} s ({wall / ideal:.2f} x)"
        )
        self.assertGreater(wall, ideal * 0.95)  # no more than 3 calls at once
        self.assertLess(wall, ideal * 1.6 + 0.5)  # lines kept busy, retries not waited for

        # Statistics stored, per line and per site, equal to what the pool counted.
        for by in ("line", "site"):
            stored = {s.key: s for s in await ModemCallLog(store).modem_call_stats(by)}
            expected = call_stats(calls, by)
            self.assertEqual(set(stored), set(expected))
            for key, stats in expected.items():
                got = stored[key]
                self.assertEqual((got.attempts, got.connects, dict(got.outcomes)),
                                 (stats.attempts, stats.connects, dict(stats.outcomes)), key)
                self.assertAlmostEqual(got.seconds, stats.seconds, places=6)
                self.assertAlmostEqual(got.connected_seconds, stats.connected_seconds,
                                       places=6)
        per_line = pool.line_stats()
        self.assertEqual(sum(s.attempts for s in per_line.values()), len(calls))
        self.assertEqual(sum(s.connects for s in per_line.values()), SITES + 1)
