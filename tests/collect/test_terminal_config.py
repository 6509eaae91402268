"""terminal-config in the engine (fep.collect.terminals): offered for meter-list entries that
name a terminal profile, always held for approval, parameters checked when asked; a plan
over terminals (SQLite plan store) marks meters without a terminal not supported and releases
the others' commands with the change; the configurator sends the profile's texts, waits for
the terminal's reply (a refusal fails with its answer, silence times out) and never puts the
password in an outcome."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.channels.terminal_session import TerminalRefused
from fep.channels.terminals import shipped_profiles
from fep.collect.commands import (
    CommandError,
    CommandNotSupported,
    check_supported,
    meter_commands,
    request,
)
from fep.collect.jobstore import job_store
from fep.collect.limits import ResourcePolicy
from fep.collect.plans import MeterState, PlanError, create
from fep.collect.planstore import PlanStore
from fep.collect.tasks import CommandStatus
from fep.collect.terminals import TerminalConfigurator
from fep.errors import ChannelError, ConfigError
from fep.model import Meter
from fep.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
PASSWORD = "k9!Tz"


def dtu(meter_id: str, **extra: str) -> Meter:
    return Meter(meter_id, "dlms", f"gprs:imei=35693803564{len(meter_id):04d}", metadata={
        "terminal": "generic-at-sms", "sms_number": "+491510000077",
        "terminal_password": PASSWORD, "group": "dtus", **extra})


class FakeSms:
    """The SMS channel as the configurator sees it: texts sent, and the terminal's reply."""

    def __init__(self, clock: Clock, configurator: Any = None, reply: str | None = "OK"
                 ) -> None:
        self.clock = clock
        self.configurator = configurator
        self.reply = reply
        self.sent: list[tuple[str, str]] = []

    def send(self, number: str, text: str, **_: Any) -> Deferred[None]:
        self.sent.append((number, text))
        if self.reply is not None:
            message = _Incoming(number, self.reply)
            self.clock.callLater(5, self.configurator.sms_received, message)
        return succeed(None)


class _Incoming:
    def __init__(self, sender: str, text: str) -> None:
        self.sender = sender
        self.text = text


class VocabularyTests(unittest.TestCase):
    async def test_offered_for_terminals_always_approved_and_checked_when_asked(self) -> None:
        plain = Meter("m1", "dlms", "tcp:host=127.0.0.1:port=1")
        self.assertNotIn("terminal-config", meter_commands(plain))
        self.assertIn("terminal-config", meter_commands(dtu("d1")))
        with self.assertRaises(CommandNotSupported) as caught:
            check_supported(plain, "terminal-config")
        self.assertIn("names no GPRS terminal profile", str(caught.exception))

        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        await store.add_meters([dtu("d1")])
        jobs = job_store(store)
        command = await request(jobs, dtu("d1"), "terminal-config",
                                {"host": "10.0.0.1", "port": "4071", "via": "sms"},
                                "api:alice", T0, approval=frozenset(), policy=ResourcePolicy())
        self.assertEqual((command.status, command.approval_required),
                         (CommandStatus.REQUESTED, True))
        self.assertNotIn(PASSWORD, repr(command.params))
        for params, words in (
            ({"port": "4071", "via": "sms"}, "give host too"),
            ({"host": "10.0.0.1", "port": "99999"}, "port 99999"),
            ({"apn": "x", "via": "tcp", "mode": "turbo"}, "mode 'turbo' is not one of"),
        ):
            with self.assertRaises(CommandError) as refused:
                await request(jobs, dtu("d1"), "terminal-config", params, "api:alice", T0,
                              approval=frozenset(), policy=ResourcePolicy())
            self.assertIn(words, str(refused.exception))
        with self.assertRaises(CommandError) as refused:
            await request(jobs, dtu("d2", sms_number=""), "terminal-config",
                          {"apn": "x"}, "api:alice", T0, approval=frozenset(),
                          policy=ResourcePolicy())
        self.assertIn("no sms_number", str(refused.exception))
        self.assertEqual(len(await jobs.commands()), 1)


class PlanTests(unittest.TestCase):
    async def test_a_plan_moves_a_group_of_terminals(self) -> None:
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        meters = [dtu("d1"), dtu("d22"), Meter("m3", "dlms", "tcp:host=127.0.0.1:port=1",
                                               metadata={"group": "dtus"})]
        await store.add_meters(meters)
        plans = PlanStore(store)
        with self.assertRaises(PlanError) as caught:
            await create(plans, {"action": "terminal-config", "target": "group:dtus",
                                 "rate": 60, "params": {"port": "soon"}}, "cli:alice", T0,
                         meters, ResourcePolicy())
        self.assertIn("terminal-config: port: port 'soon' is not a whole number",
                      str(caught.exception))
        plan = await create(plans, {"action": "terminal-config", "target": "group:dtus",
                                    "rate": 6000, "params": {"apn": "m2m.example",
                                                             "via": "sms"}},
                            "cli:alice", T0, meters, ResourcePolicy())
        rows = {r.meter: r for r in await plans.meters(plan.id)}
        self.assertEqual(rows["m3"].state, MeterState.NOT_SUPPORTED)
        self.assertIn("names no GPRS terminal profile", rows["m3"].reason or "")
        await plans.step(plan.id, "submit", "cli:alice", T0)
        await plans.step(plan.id, "approve", "api:bob", T0 + 1)
        await plans.step(plan.id, "start", "api:bob", T0 + 2)
        for n in range(5):
            await plans.tick(plan.id, T0 + 3 + n, "n1")
        commands = sorted(await plans.commands(), key=lambda c: c.meter)
        self.assertEqual([(c.meter, c.action, c.approved_by) for c in commands],
                         [("d1", "terminal-config", "api:bob"),
                          ("d22", "terminal-config", "api:bob")])

        # Each released command runs through the configurator as the runner runs it.
        clock = Clock()
        configurator = TerminalConfigurator(clock, shipped_profiles())
        configurator.sms = FakeSms(clock, configurator)
        running = Deferred.fromCoroutine(configurator.run(dtu("d1"), commands[0].params,
                                                          _no_endpoint))
        clock.advance(5)
        outcome = self.successResultOf(running)
        self.assertEqual(configurator.sms.sent, [
            ("+491510000077", f"{PASSWORD},AT+APN=m2m.example;AT+RESET")])
        self.assertTrue(outcome.ok)
        self.assertIn("set apn=m2m.example by SMS; it answered 'OK'", outcome.result)
        self.assertNotIn(PASSWORD, outcome.result)


def _no_endpoint() -> Any:
    raise AssertionError("via=sms opens no session")


class ConfiguratorTests(unittest.TestCase):
    def run_sms(self, reply: str | None, meter: Meter | None = None) -> Deferred[Any]:
        self.clock = Clock()
        self.configurator = TerminalConfigurator(self.clock, shipped_profiles())
        self.configurator.sms = FakeSms(self.clock, self.configurator, reply)
        d = Deferred.fromCoroutine(self.configurator.run(
            meter or dtu("d1"), {"heartbeat": "300"}, _no_endpoint))
        self.clock.advance(5)
        return d

    def test_a_refusal_fails_with_the_terminals_answer(self) -> None:
        failure = self.failureResultOf(self.run_sms("PASSWORD ERROR"), TerminalRefused)
        self.assertIn("refused the configuration: 'PASSWORD ERROR'", str(failure.value))
        self.assertTrue(failure.value.final)
        self.assertNotIn(PASSWORD, str(failure.value))

    def test_silence_times_out_and_other_texts_are_shown(self) -> None:
        d = self.run_sms("RSSI 23")
        self.assertNoResult(d)
        self.clock.advance(120)
        failure = self.failureResultOf(d, ChannelError)
        self.assertIn("did not answer within 120 s (it said 'RSSI 23')", str(failure.value))
        self.assertEqual(self.configurator._waiting, {})

    def test_no_password_no_text(self) -> None:
        failure = self.failureResultOf(self.run_sms("OK", dtu("d1", terminal_password="")),
                                       ConfigError)
        self.assertEqual(failure.value.key, "terminal_password")
        self.assertEqual(self.configurator.sms.sent, [])

    def test_an_unknown_profile_is_named(self) -> None:
        failure = self.failureResultOf(self.run_sms("OK", dtu("d1", terminal="acme-x9")),
                                       ConfigError)
        self.assertIn("no terminal profile 'acme-x9'", str(failure.value))


class ConsoleDoorTests(unittest.TestCase):
    async def test_the_console_asks_and_another_operator_approves(self) -> None:
        from fep.channels.routes import Channels
        from fep.collect.engine import CollectionEngine
        from fep.collect.operator import EngineScheduler
        from fep.config import parse_config
        from fep.operator.manhole import OperatorCommands
        from tests.operator.helpers import make_context

        ctx = await make_context(self, [dtu("d1"), Meter("m2", "dlms",
                                                         "tcp:host=127.0.0.1:port=1")])
        settings = parse_config("[fep]\n[store]\n[collect]\napproval =\n")
        engine = CollectionEngine(reactor, ctx.store, ctx.router, ctx.directory,
                                  settings.collect, node="n1", endpoint_for=Channels(reactor))
        ctx.scheduler = EngineScheduler(engine, ctx.store)
        alice = OperatorCommands(ctx, "alice", "SHA256:a", "operator")
        bob = OperatorCommands(ctx, "bob", "SHA256:b", "operator")
        asked = await alice.command("d1", "terminal-config", host="10.0.0.1", port=4071,
                                    via="tcp")
        self.assertEqual((asked["status"], asked["requested_by"]),
                         ("requested", "console:alice"))
        approved = await bob.approve(asked["id"])
        self.assertEqual((approved["status"], approved["approved_by"]),
                         ("queued", "console:bob"))
        with self.assertRaises(CommandError) as caught:
            await alice.command("m2", "terminal-config", apn="x")
        self.assertIn("names no GPRS terminal profile", str(caught.exception))
        with self.assertRaises(CommandError) as caught:
            await alice.command("d1", "terminal-config", host="10.0.0.1", via="tcp")
        self.assertIn("give port too", str(caught.exception))


class OneAtATimeTests(unittest.TestCase):
    def test_a_second_configuration_waiting_on_one_number_fails_to_be_retried(self) -> None:
        clock = Clock()
        configurator = TerminalConfigurator(clock, shipped_profiles())
        configurator.sms = FakeSms(clock, configurator, reply=None)
        first = Deferred.fromCoroutine(configurator.run(dtu("d1"), {"apn": "a"}, _no_endpoint))
        second = Deferred.fromCoroutine(configurator.run(dtu("d2"), {"apn": "b"},
                                                         _no_endpoint))
        failure = self.failureResultOf(second, ChannelError)
        self.assertIn("already waiting for its answer", str(failure.value))
        self.assertFalse(getattr(failure.value, "final", False))
        self.assertNoResult(first)
        configurator.sms_received(_Incoming("+491510000077", "OK"))
        self.assertTrue(self.successResultOf(first).ok)
