"""Control through a Q/GDW 1376.1 concentrator's own AFNs, through the control vocabulary,
request and approval, against the simulated concentrator (fep.sim.concentrator):

- a DL/T 645 meter behind it with ``gw3761_control = afn05`` is disconnected and reconnected
  by the concentrator's remote control of its point (AFN 05 F1 trip, F2 allow closing),
  not by a forwarded DL/T 645 relay command; ``forward`` (the default) forwards;
- ``terminal-reset`` (AFN 01 F1/F2/F3) always needs approval;
- ``parameter-read`` (AFN 0A F1, F3) and ``parameter-set`` (AFN 04: read, changed, written,
  read back); one that points the concentrator at another master station always needs
  approval;
- and the command line door: ``fep command request DCU1 terminal-reset -p kind=data``.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of
from fep.collect.tasks import CommandStatus
from fep.model import Meter
from fep.protocols.gw3761 import control
from fep.protocols.gw3761.forward import Controlled, Forwarder, ForwardSettings, Noise
from fep.protocols.gw3761.frames import Address, Afn, FrameDecoder, decode_frame
from fep.protocols.gw3761.services import (
    MasterStations,
    Trip,
    UplinkParameters,
    decode_units,
    encode_unit,
)
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from fep.store import open_store
from tests.collect.harness import engine_for, listen
from tests.daemon.harness import wait_for
from tests.inprocess import fep_main

START = 1_709_280_000.0
PASSWORD = {"dlt645_password": "02123456", "dlt645_operator": "20240301"}


class LayoutTests(unittest.TestCase):
    def test_f1_and_f3_round_trip(self) -> None:
        # F1: RTS 0, delay 2 min, timeout 30 s with 3 resends (0x301E), confirm D0|D2, 15 min.
        f1 = UplinkParameters(0, 2, 30, 3, 5, 15)
        unit = encode_unit(Afn.SET_PARAMETERS, [0], [1], False, {(0, 1): f1})
        self.assertEqual(unit.hex(" "), "00 00 01 00 00 02 1e 30 05 0f")
        self.assertEqual(decode_units(Afn.SET_PARAMETERS, unit, False)[0].value, f1)
        f3 = MasterStations("10.1.2.3", 9761, "10.1.2.4", 9762, "cmnet")
        unit = encode_unit(Afn.QUERY_PARAMETERS, [0], [3], True, {(0, 3): f3})
        self.assertEqual(unit[4:16].hex(" "), "0a 01 02 03 21 26 0a 01 02 04 22 26")
        self.assertEqual(unit[16:], b"cmnet" + bytes(11))
        self.assertEqual(decode_units(Afn.QUERY_PARAMETERS, unit, True)[0].value, f3)

    def test_parameters_are_checked_when_asked(self) -> None:
        self.assertEqual(control.parse_changes({"heartbeat": "5", "host": "10.0.0.9",
                                                "attempts": 3}),
                         {1: {"heartbeat": 5}, 3: {"host": "10.0.0.9"}})
        for params, why in (({"heartbeat": "300"}, "heartbeat=300 is not 0..255"),
                            ({"host": "example.com"}, "not an IPv4 address"),
                            ({"apn": "x" * 17}, "up to 16 ASCII"),
                            ({"colour": "red"}, "unknown gw3761 parameter 'colour'"),
                            ({}, "sets nothing")):
            with self.assertRaises(Exception) as caught:
                control.parse_changes(params)
            self.assertIn(why, str(caught.exception))
        self.assertEqual(control.parse_fns({"fn": "F3"}), (3,))
        self.assertEqual(control.reset_fn({"kind": "parameters"}), 3)

    def test_a_plan_checks_a_resets_kind_when_it_is_made(self) -> None:
        from fep.collect.plans import PlanError, new_plan

        plan = new_plan("", "terminal-reset", "protocol:gw3761", who="alice", now=START,
                        rate=10, params={"kind": "data"})
        self.assertEqual(plan.params, {"kind": "data"})
        with self.assertRaises(PlanError) as caught:
            new_plan("", "terminal-reset", "protocol:gw3761", who="alice", now=START, rate=10,
                     params={"kind": "factory"})
        self.assertIn("terminal-reset: terminal-reset kind='factory'", str(caught.exception))

    def test_an_exchange_resends_then_fails_naming_the_concentrator(self) -> None:
        exchange = control.Exchange(Address("4403", 4), control.reset_steps({"kind": "data"}),
                                    retries=1, meter="DCU1")
        (first,) = exchange.start()
        self.assertIsInstance(first, control.Send)
        (again,) = exchange.timeout()
        self.assertEqual(again, first)
        (failed,) = exchange.timeout()
        self.assertIsInstance(failed, control.Failed)
        self.assertIn("4403:0004 did not answer 01:F2 reset", str(failed.error))


class ForwarderControlTests(unittest.TestCase):
    """The AFN 05 remote control on a forwarding connection, sans-IO."""

    def setUp(self) -> None:
        self.sim = make_concentrator(3, clock=lambda: START)
        self.forwarder = Forwarder(self.sim.address, ForwardSettings(port=31))

    def exchange(self, request: bytes) -> list[Any]:
        return [a for b in self.sim.receive(request, FrameDecoder())
                for a in self.forwarder.receive(b)]

    def test_trip_and_allow_closing_of_a_point(self) -> None:
        frame = decode_frame(self.forwarder.control(3, True))
        self.assertEqual((frame.afn, frame.address.key, len(frame.pw or b"")),
                         (Afn.CONTROL, "4403:0004", 16))
        (item,) = decode_units(Afn.CONTROL, frame.data, False)
        self.assertEqual((item.point, item.fn, item.value), (3, 1, Trip(0, 0)))
        self.assertEqual(self.exchange(frame.encode()), [Controlled(3, True)])
        self.assertFalse(self.sim.meters[2].relay_closed)
        self.assertEqual(self.exchange(self.forwarder.control(3, False)),
                         [Controlled(3, False)])
        self.assertFalse(self.sim.meters[2].relay_command_open)
        self.assertFalse(self.forwarder.waiting)

    def test_a_denial_and_a_stray_answer(self) -> None:
        self.sim.refuse.add((Afn.CONTROL, 2))
        self.assertEqual(self.exchange(self.forwarder.control(1, False)), [Controlled(
            1, False, "the concentrator denied the remote control (AFN 00 F2)")])
        # A forwarding's answer while a control waits is not its confirmation.
        wrapped = self.forwarder.wrap(b"\x68")
        self.forwarder.control(1, True)
        actions = [a for b in self.sim.receive(wrapped, FrameDecoder())
                   for a in self.forwarder.receive(b)]
        self.assertTrue(all(isinstance(a, Noise) for a in actions), actions)


class ConcentratorControlTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.sim = make_concentrator(3, clock=lambda: START)
        self.meter = self.sim.meters[1]  # point 2
        self.sim.ports[self.meter.address] = 2
        self.sim.archive[2] = self.sim.entry_for(2, self.meter)
        dcu_port = listen(self, ConcentratorFactory(self.sim, reactor))
        self.fleet = {
            "DCU1": Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={dcu_port}",
                          address="4403:0004"),
            "M2": Meter("M2", "dlt645", "gw3761:DCU1:port=2", address=self.meter.address,
                        metadata={"concentrator": "DCU1", "point": "P2",
                                  "gw3761_control": "afn05", **PASSWORD}),
            "F2": Meter("F2", "dlt645", "gw3761:DCU1:port=2", address=self.meter.address,
                        metadata={"concentrator": "DCU1", "point": "2", **PASSWORD}),
        }
        # afn05 on a route that does not forward (the concentrator's own).
        self.fleet["D2"] = Meter("D2", "dlt645", self.fleet["DCU1"].route,
                                 address=self.meter.address, metadata=self.fleet["M2"].metadata)
        self.engine, self.store = await engine_for(self, list(self.fleet.values()),
                                                   collect={"approval": "disconnect"})
        self.policy = self.engine.scheduler.resources

    async def ask(self, meter: str, action: str, **params: Any) -> Any:
        return await commands.request(
            self.engine.jobs, self.fleet[meter], action, params, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2,
            attempts=1)

    async def run_command(self, meter: str, action: str, **params: Any) -> Any:
        asked = await self.ask(meter, action, **params)
        if asked.status == CommandStatus.REQUESTED:
            await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                                   self.fleet[meter], self.policy)
        self.engine.scheduler.kick()

        async def settled() -> bool:
            c = await self.engine.jobs.command(asked.id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {asked.id} to end", every=0.05)
        return await self.engine.jobs.command(asked.id)

    async def test_disconnect_and_reconnect_by_the_concentrators_remote_control(self) -> None:
        done = await self.run_command("M2", "disconnect")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(done.approved_by, "bob")
        self.assertIn("request=05:F1 remote trip", done.outcome)
        self.assertIn("point=2", done.outcome)
        self.assertEqual(self.sim.trips, {2: True})
        self.assertFalse(self.meter.relay_closed)
        self.assertEqual(self.meter.operators, [])  # no DL/T 645 relay command reached it
        self.assertEqual(self.sim.forwarded, 0)
        done = await self.run_command("M2", "reconnect")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("request=05:F2 allow closing", done.outcome)
        self.assertEqual(self.sim.trips, {2: False})
        self.assertFalse(self.meter.relay_command_open)  # the customer may close it now

    async def test_wrong_control_settings_are_refused_when_asked(self) -> None:
        for metadata, why in (({"gw3761_control": "afn10"}, "gw3761_control='afn10'"),
                              ({"gw3761_control": "afn05", "point": ""}, "needs its point")):
            self.fleet["X"] = Meter("X", "dlt645", "gw3761:DCU1:port=2",
                                    address=self.meter.address,
                                    metadata={**self.fleet["M2"].metadata, **metadata})
            with self.assertRaises(commands.CommandError) as caught:
                await self.ask("X", "reconnect")
            self.assertIn(why, str(caught.exception))

    async def test_afn05_on_a_route_that_does_not_forward_fails_at_once(self) -> None:
        done = await self.run_command("D2", "reconnect")
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("needs a route through the concentrator", done.outcome)

    async def test_forward_is_the_default(self) -> None:
        done = await self.run_command("F2", "disconnect")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(self.sim.trips, {})
        self.assertEqual(self.meter.operators, [("relay control trip", "20240301")])
        self.assertGreater(self.sim.forwarded, 0)

    async def test_a_denied_remote_control_fails_naming_the_concentrator(self) -> None:
        self.sim.refuse = {(Afn.CONTROL, 1)}
        done = await self.run_command("M2", "disconnect")
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("concentrator DCU1 (4403:0004) point 2", done.outcome)
        self.assertIn("denied the remote control", done.outcome)
        self.assertTrue(self.meter.relay_closed)

    async def test_terminal_reset_always_needs_approval(self) -> None:
        asked = await self.ask("DCU1", "terminal-reset", kind="data")
        self.assertEqual(asked.status, CommandStatus.REQUESTED)
        with self.assertRaises(commands.CommandError) as caught:
            await self.ask("DCU1", "terminal-reset", kind="everything")
        self.assertIn("kind='everything'", str(caught.exception))
        with self.assertRaises(commands.CommandNotSupported):
            await self.ask("M2", "terminal-reset", kind="data")
        done = await self.run_command("DCU1", "terminal-reset", kind="hardware")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(done.approved_by, "bob")
        self.assertIn("request=01:F1", done.outcome)
        self.assertEqual(self.sim.resets, [1])

    async def test_parameter_read_and_set(self) -> None:
        read = await self.run_command("DCU1", "parameter-read")
        self.assertEqual(read.status, CommandStatus.DONE, read.outcome)
        self.assertIn("F3.host=10.0.0.1", read.outcome)
        self.assertIn("F1.heartbeat=15", read.outcome)
        self.assertIsNone(read.approved_by)
        done = await self.run_command("DCU1", "parameter-set", heartbeat=5, timeout=60)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIsNone(done.approved_by)  # [collect] approval does not name it
        self.assertEqual(self.sim.uplink, UplinkParameters(timeout=60, heartbeat=5))
        # Another master station: always approved, the rest of F3 kept.
        asked = await self.ask("DCU1", "parameter-set", host="10.9.9.9", port=9000)
        self.assertEqual(asked.status, CommandStatus.REQUESTED)
        done = await self.run_command("DCU1", "parameter-set", port2=9001)
        self.assertEqual(done.approved_by, "bob")
        self.assertEqual(self.sim.stations,
                         MasterStations("10.0.0.1", 9760, "10.0.0.2", 9001, "cmnet"))
        self.sim.refuse = {(Afn.SET_PARAMETERS, 1)}
        denied = await self.run_command("DCU1", "parameter-set", heartbeat=1)
        self.assertEqual(denied.status, CommandStatus.FAILED)
        self.assertIn("denied 04:F1", denied.outcome)


class CommandLineDoorTests(unittest.TestCase):
    async def test_fep_command_request_terminal_reset(self) -> None:
        path = Path(self.mktemp()).resolve().with_suffix(".sqlite")
        store = open_store(f"sqlite:{path}", reactor)
        await store.open()
        await store.add_meters([Meter("DCU1", "gw3761", "tcp:host=10.0.0.1:port=9761",
                                      address="4403:0004")])
        await store.close()
        me = pwd.getpwuid(os.getuid()).pw_name
        done = fep_main("--db", f"sqlite:{path}", "command", "request", "DCU1",
                        "terminal-reset", "-p", "kind=data", "--by", me)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("command 1: terminal-reset for DCU1 awaits approval", done.stdout)
        wrong = fep_main("--db", f"sqlite:{path}", "command", "request", "DCU1",
                         "terminal-reset", "-p", "kind=all", "--by", me)
        self.assertEqual(wrong.returncode, 2)
        self.assertIn("terminal-reset kind='all'", wrong.stderr)
