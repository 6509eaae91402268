"""Meters that call in over PSTN: the pool's lines answer a ringing line (caller id from
+CLIP, or none), hand the connected call over, record it, and keep a dial-out job waiting
until the call in has ended; emulated modems on socat ptys (fep/sim/hayes.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.channels.modem.pool import IncomingCall
from fep.channels.modem.stats import CallOutcome
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from tests.channels.modem.emulated import emulated_pool, new_exchange, reactor
from tests.channels.modem.test_sms import until

CALLER = "+493012345678"
SITE = "+541140001234"


class CallingMeter(Protocol):
    """A meter's modem after it dialled the master station: sends its alarm, then hangs up
    when told (``hang_up``)."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.connected = False
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.connected = True
        assert self.transport is not None
        self.transport.write(self.message)

    def hang_up(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost.callback(None)


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.closed = True


class DialInTests(unittest.TestCase):
    timeout = 60

    async def pool(self, exchange: Any) -> Any:
        self.calls: list[IncomingCall] = []
        self.collected: list[Collect] = []

        def incoming(call: IncomingCall) -> Deferred[Any]:
            self.calls.append(call)
            collect = Collect()
            self.collected.append(collect)
            return call.endpoint.connect(Factory.forProtocol(lambda: collect))

        return await emulated_pool(self, exchange, 1, on_incoming=incoming)

    async def test_a_ringing_line_is_answered_with_its_caller_id_and_recorded(self) -> None:
        exchange = new_exchange()
        pool, (modem,) = await self.pool(exchange)
        self.assertTrue(modem.clip)  # AT+CLIP=1 at start
        meter = CallingMeter(b"ALARM 17 COVER OPEN\r\n")
        self.assertTrue(exchange.call_in(CALLER, modem, meter))
        await until(lambda: bool(self.collected) and b"COVER OPEN" in self.collected[0].data,
                    10)
        [call] = self.calls
        self.assertEqual((call.caller, call.line, call.route), (CALLER, "m1", f"dialup:{CALLER}"))
        self.assertIn("ATA", modem.commands)
        meter.hang_up()
        record = await call.ended
        self.assertEqual((record.number, record.outcome), (CALLER, CallOutcome.COMPLETED))
        await until(lambda: self.collected[0].closed and pool.active == 0, 10)
        self.assertEqual(exchange.incoming, [(CALLER, "m1", "connect")])
        self.assertEqual(pool.incoming_calls, 1)

    async def test_without_caller_id_the_second_ring_is_answered(self) -> None:
        exchange = new_exchange()
        _pool, (modem,) = await self.pool(exchange)
        modem.clip = False  # a line without caller id presentation
        meter = CallingMeter(b"/ABC5METER01\r\n")
        exchange.call_in("+49301111", modem, meter)
        await until(lambda: bool(self.calls), 10)
        self.assertIsNone(self.calls[0].caller)
        self.assertEqual(self.calls[0].route, "dialup:unknown")
        meter.hang_up()
        await self.calls[0].ended

    async def test_a_dial_out_job_waits_for_the_call_in_to_end(self) -> None:
        exchange = new_exchange()
        exchange.add(SITE, IecMeterServerFactory([SimulatedIecMeter(address="20000001")],
                                                 reactor))
        pool, (modem,) = await self.pool(exchange)
        meter = CallingMeter(b"ALARM 3\r\n")
        exchange.call_in(CALLER, modem, meter)
        await until(lambda: bool(self.calls), 10)
        order: list[str] = []

        async def session(endpoint: Any) -> str:
            order.append("dial-out session")
            collect = Collect()
            protocol = await endpoint.connect(Factory.forProtocol(lambda: collect))
            protocol.transport.write(b"/?20000001!\r\n")
            await until(lambda: b"\r\n" in collect.data, 10)
            return collect.data.decode("latin-1")

        job = Deferred.fromCoroutine(self._call(pool, session))
        # The only line is busy with the call in: the job waits, nothing is dialled.
        await until(lambda: len(pool._waiters) == 1, 10)  # queued for the line
        self.assertEqual(exchange.calls, [])
        self.assertFalse(job.called)
        order.append("caller hangs up")
        meter.hang_up()
        identification = await job
        self.assertTrue(identification.startswith("/"))
        self.assertEqual(order, ["caller hangs up", "dial-out session"])
        self.assertEqual([c.number for c in exchange.calls], [SITE])

    async def _call(self, pool: Any, session: Any) -> Any:
        return await pool.call(SITE, lambda endpoint: Deferred.fromCoroutine(session(endpoint)))

    async def test_a_line_busy_in_a_call_is_busy_for_a_caller(self) -> None:
        exchange = new_exchange()
        _pool, (modem,) = await self.pool(exchange)
        first = CallingMeter(b"ALARM 1\r\n")
        exchange.call_in(CALLER, modem, first)
        await until(lambda: bool(self.calls), 10)
        self.assertFalse(exchange.call_in("+4930999", modem, CallingMeter(b"ALARM 2\r\n")))
        self.assertEqual(exchange.incoming[-1], ("+4930999", "m1", "busy"))
        first.hang_up()
        await self.calls[0].ended

    async def test_a_line_leased_for_a_dial_out_job_is_not_answered(self) -> None:
        exchange = new_exchange()
        pool, (modem,) = await self.pool(exchange)
        line = await pool.lease()  # a dial-out job holds the line, not yet dialling
        exchange.call_in(CALLER, modem, CallingMeter(b"ALARM 9\r\n"), rings=3)
        await until(lambda: exchange.incoming == [(CALLER, "m1", "no answer")], 10)
        self.assertNotIn("ATA", modem.commands)
        self.assertEqual(self.calls, [])
        pool._release(line)


class AnsweringMeter(CallingMeter):
    """A calling meter that also answers a request on its call: ``/?!`` gets its
    identification; anything else is ignored."""

    def dataReceived(self, data: bytes) -> None:
        if b"/?" in data:
            assert self.transport is not None
            self.transport.write(b"/ABC5METER01\r\n")

    def say(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class ReadOverCallInTests(unittest.TestCase):
    """A read of the calling meter's route while its call is up goes over that call (no
    dial, no line), beside the protocol that took the call, which gets the call back."""

    timeout = 60
    pool = DialInTests.pool

    async def test_a_read_of_the_caller_goes_over_its_call(self) -> None:
        from fep.errors import ChannelError

        exchange = new_exchange()
        pool, (modem,) = await self.pool(exchange)
        sunk: list[Any] = []
        self.sunk = sunk

        class Sink:
            def submit(self, records: Any) -> Deferred[None]:
                sunk.append(list(records))
                d: Deferred[None] = Deferred()
                d.callback(None)
                return d

        pool.push_sink = Sink()
        meter = AnsweringMeter(b"ALARM 7\r\n")
        exchange.call_in(CALLER, modem, meter)
        await until(lambda: bool(self.collected) and b"ALARM 7" in self.collected[0].data, 10)
        taker = self.collected[0]
        # The route as the meter list writes it (digits compared: 0049... is +49...).
        read = Collect()
        protocol = await pool.endpoint("0049 30 12345678").connect(
            Factory.forProtocol(lambda: read))
        self.assertIs(protocol, read)
        assert read.transport is not None
        read.transport.write(b"/?!\r\n")
        await until(lambda: b"METER01" in read.data, 10)
        self.assertNotIn(b"METER01", taker.data)
        self.assertEqual(exchange.calls, [])  # nothing dialled
        # One read at a time on a call.
        with self.assertRaises(ChannelError):
            await pool.endpoint(CALLER).connect(Factory.forProtocol(Collect))
        # Pushes the read tells from its answers go to the pool's sink; bytes it leaves
        # unread go back to the protocol that took the call, before what comes next.
        from fep.interfaces import IPushChannel

        channel = IPushChannel(read.transport)
        await channel.pushed(["a record"])  # type: ignore[list-item]
        self.assertEqual(self.sunk, [["a record"]])
        channel.unconsumed(b"ALARM 7b ")
        # Done: the call goes back to the protocol that took it, and goes on.
        read.transport.loseConnection()
        self.assertTrue(read.closed)
        meter.say(b"ALARM 8\r\n")
        await until(lambda: b"ALARM 8" in taker.data, 10)
        self.assertIn(b"ALARM 7b ALARM 8", taker.data)
        self.assertFalse(taker.closed)
        # A second read; the caller hangs up during it: the read's connection is lost.
        second = Collect()
        await pool.endpoint(CALLER).connect(Factory.forProtocol(lambda: second))
        meter.hang_up()
        record = await self.calls[0].ended
        self.assertEqual(record.outcome, CallOutcome.COMPLETED)
        await until(lambda: second.closed and taker.closed, 10)
        self.assertIsNone(pool.inbound_call(CALLER))
        self.assertEqual(exchange.calls, [])
