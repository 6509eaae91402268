"""Routes through a concentrator (fep.channels.forwarding): ``gw3761:DCU1:port=N`` parsed
and refused as docs/routes.md says, its resource the concentrator's line, and over loopback
against the simulated concentrator: a DL/T 645 read and a relay command give what talking to
the simulated meter directly gives, a silent meter is a ChannelError naming concentrator,
port and meter, and one forwarding at a time runs per concentrator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from fep.channels.forwarding import forwarding_target
from fep.channels.routes import Channels, parse_route
from fep.collect.forwarding import add_forwarding
from fep.errors import ChannelError, RouteError
from fep.model import Meter, Reading
from fep.protocols.dlt645.session import Dlt645Protocol
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from fep.sim.dlt645 import Dlt645BusFactory
from tests.collect.harness import listen
from tests.daemon.harness import wait_for

START = 1_709_280_000.0  # the simulated meters' clock stands still: equal reads
RECEIVED = datetime(2024, 3, 1, tzinfo=UTC)


def same(records: list[Any]) -> list[Any]:
    """Records without the moment fep received them."""
    return [attrs.evolve(r, received_time=RECEIVED) if isinstance(r, Reading) else r
            for r in records]


class RouteTests(unittest.TestCase):
    def test_form_and_errors(self) -> None:
        name, settings = forwarding_target(parse_route("gw3761:DCU1:port=2:baud=9600:parity=N"))
        self.assertEqual((name, settings.port, settings.baud, settings.parity, settings.timeout),
                         ("DCU1", 2, 9600, "N", 5.0))
        for route, why in (
            ("gw3761:DCU1", "needs port=N"),
            ("gw3761:port=2", "expected gw3761:CONCENTRATOR:port=N"),
            ("gw3761:DCU1:port=40", "port 40 is not 1..31"),
            ("gw3761:DCU1:port=2:baud=1000", "baud 1000 is not one of 300, 600, 1200"),
            ("gw3761:DCU1:port=2:speed=9600", "unknown gw3761 option 'speed'"),
            ("gw3761:DCU1:port=2:timeout=300", "timeout 300 s is not 1..127 seconds"),
        ):
            with self.assertRaises(RouteError) as caught:
                forwarding_target(parse_route(route))
            self.assertIn(why, str(caught.exception), route)

    def test_resource_is_the_concentrators_line(self) -> None:
        self.assertEqual(parse_route("gw3761:DCU1:port=2@000000000002").resource,
                         "gw3761:DCU1")
        self.assertEqual(parse_route("gw3761:DCU1:port=2@000000000002").address,
                         "000000000002")
        channels = Channels(reactor)
        dcu = Meter("DCU1", "gw3761", "tcp:host=10.0.0.9:port=9761", address="4403:0004")
        add_forwarding(channels, {"DCU1": dcu}.get)
        self.assertEqual(channels.resource_of("gw3761:DCU1:port=2"), "tcp:10.0.0.9:9761")
        self.assertEqual(channels.resource_of("gw3761:DCU9:port=2"), "gw3761:DCU9")

    def test_unknown_or_wrong_concentrators_are_refused_before_connecting(self) -> None:
        with self.assertRaises(RouteError) as caught:
            Channels(reactor).endpoint_for("gw3761:DCU1:port=2")
        self.assertIn("no gw3761 channel is configured on this node", str(caught.exception))
        channels = Channels(reactor)
        add_forwarding(channels, {
            "M1": Meter("M1", "dlt645", "tcp:host=10.0.0.9:port=1"),
            "BAD": Meter("BAD", "gw3761", "tcp:host=10.0.0.9:port=1", address="44030004"),
        }.get)
        for route, why in (
            ("gw3761:DCU1:port=2", "concentrator 'DCU1' is not a meter of the meter list"),
            ("gw3761:M1:port=2", "meter M1 is a dlt645 meter, not a gw3761 concentrator"),
            ("gw3761:BAD:port=2", "concentrator BAD: a gw3761 address is A1:A2"),
        ):
            with self.assertRaises(RouteError) as caught:
                channels.endpoint_for(route)
            self.assertIn(why, str(caught.exception), route)


class LoopbackTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.sim = make_concentrator(3, clock=lambda: START)
        self.meter = self.sim.meters[1]
        self.sim.ports[self.meter.address] = 2
        self.factory = ConcentratorFactory(self.sim, reactor)
        port = listen(self, self.factory)
        self.dcu = Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={port}",
                         address="4403:0004")
        self.channels = Channels(reactor)
        add_forwarding(self.channels, {"DCU1": self.dcu}.get)
        password = {"dlt645_password": "02123456", "dlt645_operator": "20240301"}
        self.through = Meter("M2", "dlt645", "gw3761:DCU1:port=2", address=self.meter.address,
                             metadata=password)
        direct = listen(self, Dlt645BusFactory([self.meter], reactor))
        self.direct = attrs.evolve(self.through, route=f"tcp:host=127.0.0.1:port={direct}")

    def endpoint(self, meter: Meter) -> Any:
        return self.channels.endpoint_for(meter.route)

    async def test_a_read_gives_what_the_meter_gives_directly(self) -> None:
        protocol = Dlt645Protocol()
        forwarded = await protocol.read(reactor, self.endpoint(self.through), self.through, 5)
        direct = await protocol.read(reactor, self.endpoint(self.direct), self.direct, 5)
        self.assertTrue(forwarded)
        self.assertEqual(same(forwarded), same(direct))
        self.assertGreater(self.sim.forwarded, 1)

    async def test_relay_commands_give_what_they_give_directly(self) -> None:
        protocol = Dlt645Protocol()

        async def command(meter: Meter, name: str) -> Any:
            params = {"mode": "direct"} if name == "reconnect" else {}
            return dict(await protocol.run_command(reactor, self.endpoint(meter), meter, name,
                                                   params, 5, lambda _: None))

        forwarded = await command(self.through, "disconnect")
        self.assertFalse(self.meter.relay_closed)
        self.assertEqual(self.meter.operators, [("relay control trip", "20240301")])
        await command(self.direct, "reconnect")
        self.assertTrue(self.meter.relay_closed)
        direct = await command(self.direct, "disconnect")
        self.assertEqual(forwarded, direct)
        self.assertFalse(self.meter.relay_closed)
        await command(self.through, "reconnect")
        self.assertTrue(self.meter.relay_closed)
        await command(self.through, "demand-reset")
        self.assertEqual((self.meter.demand_resets, self.meter.demand), (1, 0))

    async def test_a_meter_that_does_not_answer_names_concentrator_port_and_meter(self) -> None:
        self.sim.silent.add(self.meter.address)
        with self.assertRaises(ChannelError) as caught:
            await Dlt645Protocol().read(reactor, self.endpoint(self.through), self.through, 5)
        self.assertIn(f"forwarding through concentrator DCU1 (4403:0004) port 2 to meter "
                      f"{self.meter.address}: the meter did not answer", str(caught.exception))
        self.assertEqual(caught.exception.route, "gw3761:DCU1:port=2")

    async def test_a_denied_forwarding_is_a_channel_error(self) -> None:
        self.sim.refuse.add((0x10, 1))
        with self.assertRaises(ChannelError) as caught:
            await Dlt645Protocol().read(reactor, self.endpoint(self.through), self.through, 5)
        self.assertIn("concentrator DCU1 (4403:0004) port 2", str(caught.exception))
        self.assertIn("the concentrator denied the forwarding", str(caught.exception))

    async def test_a_concentrator_that_is_not_there_is_named(self) -> None:
        port = listen(self, ConcentratorFactory(self.sim, reactor))
        gone = attrs.evolve(self.dcu, route=f"tcp:host=127.0.0.1:port={port}")
        await self._stop_listening_on(port)
        self.channels = Channels(reactor)
        add_forwarding(self.channels, {"DCU1": gone}.get)
        with self.assertRaises(ChannelError) as caught:
            await Dlt645Protocol().read(reactor, self.endpoint(self.through), self.through, 5)
        self.assertIn(f"concentrator DCU1 (tcp:host=127.0.0.1:port={port}): ",
                      str(caught.exception))

    async def _stop_listening_on(self, port: int) -> None:
        # listen() keeps the port for cleanup; find it and stop it now.
        for p in list(reactor.getReaders()):
            host = getattr(p, "getHost", None)
            if host is not None and getattr(host(), "port", None) == port and hasattr(
                    p, "stopListening"):
                await p.stopListening()

    async def test_one_forwarding_at_a_time_per_concentrator(self) -> None:
        other = self.sim.meters[2]
        self.sim.ports[other.address] = 3
        second = Meter("M3", "dlt645", "gw3761:DCU1:port=3", address=other.address)
        protocol = Dlt645Protocol()
        reads = [protocol.read(reactor, self.endpoint(m), m, 5) for m in (self.through, second)]
        # Both wait on the concentrator's own line: one holds it, the other waits.
        self.assertEqual(self.channels.busy(), {self.channels.resource_of(self.dcu.route): 2})
        first, then = await gatherResults(reads)
        self.assertTrue(first and then)
        self.assertEqual(self.factory.connections, 2)

        async def free() -> bool:
            return not self.channels.busy()

        await wait_for(free, 10, "the concentrator's line to be free", every=0.01)
