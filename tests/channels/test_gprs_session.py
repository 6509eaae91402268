"""The GPRS session machine with bytes and events only: every state and transition (connect,
identification and garbage, the unknown-modem policies, registration, proofs, identity
conflicts under both policies, heartbeats, the pipe and its wait, idle and identify
timeouts, replacement, close and loss), and every input a state does not take refused:
counted and logged, never raised."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.channels import gprs_session
from fep.channels.gprs import GprsSettings
from fep.channels.gprs_session import (
    INPUTS,
    MAX_HELD_BYTES,
    PIPE_WAIT,
    Attach,
    CancelTimer,
    Claim,
    Close,
    FailPipeWait,
    Gone,
    GprsStats,
    Holder,
    Identified,
    Input,
    Log,
    LosePipe,
    OpenPipe,
    RefusePipe,
    Register,
    Release,
    ReleasePipe,
    Replace,
    Send,
    SessionMachine,
    SessionState,
    StartTimer,
    Timer,
    ToHandler,
    ToPipe,
    Unregister,
)
from fep.channels.identify import Identity, make_rules
from fep.channels.modem_identity import SourceNetworks, modem_secret, parse_source_networks
from fep.model import Meter
from tests.channels.test_gprs import Answering, ChannelTestCase

IMEI = "356938035643809"
NAME = f"imei={IMEI}"
REGISTRATION = f"ID:{IMEI}\r\n".encode()
METER = Meter("m1", "dlms", f"gprs:{NAME}")
S = SessionState


class World:
    """The lookups a machine makes, as plain data."""

    def __init__(self) -> None:
        self.meters: dict[str, list[Meter]] = {}
        self.held: dict[str, Holder] = {}
        self.certificate: set[str] | None = None

    def resolve(self, identity: Identity) -> list[Meter]:
        for key, value in identity.keys:
            if f"{key}={value}" in self.meters:
                return list(self.meters[f"{key}={value}"])
        return []

    def secrets(self, meters: Sequence[Meter]) -> list[str]:
        return [s for s in (modem_secret(m) for m in meters) if s]

    def certificate_names(self) -> set[str] | None:
        return self.certificate

    def holders(self, names: Sequence[str]) -> list[Holder]:
        out: list[Holder] = []
        for name in names:
            held = self.held.get(name)
            if held is not None and held not in out:
                out.append(held)
        return out

    def route_names(self, route: str) -> list[str]:
        return [route[len("gprs:"):]] if route.startswith("gprs:") else []

    def frames(self) -> int:
        return 0


def kinds(actions: Sequence[object]) -> list[type]:
    return [type(a) for a in actions if not isinstance(a, Log)]


def logs(actions: Sequence[object], event: str | None = None) -> list[Log]:
    return [a for a in actions if isinstance(a, Log)
            and (event is None or a.fields.get("event") == event)]


class MachineTestCase(unittest.TestCase):
    settings = GprsSettings(identify_timeout=30.0, idle_timeout=120.0)

    def setUp(self) -> None:
        self.now = 100.0
        self.world = World()
        self.world.meters[NAME] = [METER]
        self.stats = GprsStats()

    def machine(self, settings: GprsSettings | None = None) -> SessionMachine:
        settings = settings or self.settings
        return SessionMachine(
            settings, make_rules(settings.rules, settings.registration), self.stats,
            self.world, clock=lambda: self.now, listener="tcp:4070", session_id=7)

    def connected(self, settings: GprsSettings | None = None) -> SessionMachine:
        m = self.machine(settings)
        m.connected("10.1.2.3:40001", "10.1.2.3")
        return m

    def attached(self, settings: GprsSettings | None = None) -> SessionMachine:
        m = self.connected(settings)
        m.data(REGISTRATION)
        self.assertIs(m.state, S.ATTACHED)
        return m

    def in_state(self, state: SessionState) -> SessionMachine:
        """A machine brought to ``state`` by inputs alone."""
        if state is S.NEW:
            return self.machine()
        if state is S.IDENTIFYING:
            return self.connected()
        if state is S.REGISTERING:
            self.world.meters.clear()
            m = self.connected(GprsSettings(unknown="register"))
        elif state is S.QUARANTINED:
            self.world.meters.clear()
            m = self.connected()
        elif state is S.CONTESTED:
            self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now)
            m = self.connected()
        else:
            m = self.attached()
            if state is S.WAITING:
                m.pipe_requested("gprs:imei=1", push_pending=True)
            elif state is S.PIPE:
                m.pipe_requested("gprs:imei=1", push_pending=False)
            elif state is S.CLOSING:
                m.close("test")
            elif state is S.CLOSED:
                m.lost("gone")
            self.assertIs(m.state, state)
            return m
        m.data(REGISTRATION)
        self.assertIs(m.state, state)
        return m


INPUT_CALLS: dict[Input, Callable[[SessionMachine], list[Any]]] = {
    Input.CONNECTED: lambda m: m.connected("10.1.2.3:40001", "10.1.2.3"),
    Input.DATA: lambda m: m.data(b"\x00"),
    Input.TIMEOUT_IDENTIFY: lambda m: m.timeout(Timer.IDENTIFY),
    Input.TIMEOUT_IDLE: lambda m: m.timeout(Timer.IDLE),
    Input.TIMEOUT_CONTEST: lambda m: m.timeout(Timer.CONTEST),
    Input.TIMEOUT_PIPE_WAIT: lambda m: m.timeout(Timer.PIPE_WAIT),
    Input.REGISTERED: lambda m: m.registered(METER),
    Input.REGISTRATION_FAILED: lambda m: m.registration_failed("store down"),
    Input.PIPE_REQUESTED: lambda m: m.pipe_requested("gprs:imei=1", push_pending=False),
    Input.PUSH_FINISHED: lambda m: m.push_finished(),
    Input.PIPE_RELEASED: lambda m: m.pipe_released(),
    Input.REPLACED: lambda m: m.replaced("10.5.5.5:2"),
    Input.SEND: lambda m: m.send(b"request"),
    Input.CLOSE: lambda m: m.close("test"),
    Input.LOST: lambda m: m.lost("gone"),
}


class TableTests(MachineTestCase):
    def test_the_machine_imports_no_twisted(self) -> None:
        tree = ast.parse(inspect.getsource(gprs_session))
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names]
        self.assertEqual([m for m in imported if m and m.startswith("twisted")], [])

    def test_every_input_has_a_call_and_a_row(self) -> None:
        self.assertEqual(set(INPUT_CALLS), set(Input))
        self.assertEqual(set(INPUTS), set(Input))

    def test_inputs_a_state_does_not_take_are_refused_counted_and_logged(self) -> None:
        refusals = 0
        for state in SessionState:
            for what in Input:
                if state in INPUTS[what]:
                    continue
                self.setUp()
                m = self.in_state(state)
                before = self.stats.refused_inputs
                actions = INPUT_CALLS[what](m)
                self.assertEqual(self.stats.refused_inputs, before + 1, (state, what))
                self.assertIs(m.state, state, (state, what))
                (refusal,) = logs(actions, "gprs_input_refused")
                self.assertTrue(refusal.limited)
                self.assertEqual((refusal.fields["input"], refusal.fields["state"]),
                                 (what.value, state.value))
                self.assertEqual(kinds(actions),
                                 [RefusePipe] if what is Input.PIPE_REQUESTED else [])
                refusals += 1
        self.assertGreater(refusals, 80)

    def test_every_input_in_every_state_returns_actions(self) -> None:
        for state in SessionState:
            for what in Input:
                self.setUp()
                m = self.in_state(state)
                self.assertIsInstance(INPUT_CALLS[what](m), list, (state, what))


class ConnectTests(MachineTestCase):
    def test_connected_starts_identifying_and_the_timers(self) -> None:
        m = self.machine()
        actions = m.connected("10.1.2.3:40001", "10.1.2.3")
        self.assertIs(m.state, S.IDENTIFYING)
        self.assertEqual([a for a in actions if not isinstance(a, Log)],
                         [StartTimer(Timer.IDENTIFY, 30.0), StartTimer(Timer.IDLE, 120.0)])
        self.assertEqual((m.peer, self.stats.connections), ("10.1.2.3:40001", 1))

    def test_a_source_outside_the_listeners_networks_is_closed(self) -> None:
        allow = parse_source_networks("10.0.0.0/8")
        m = self.machine(GprsSettings(allow=allow))
        actions = m.connected("192.0.2.1:5", "192.0.2.1")
        self.assertIs(m.state, S.CLOSING)
        self.assertIn(Close(), actions)
        self.assertEqual(len(logs(actions, "gprs_source_refused")), 1)
        self.assertEqual(self.stats.source_refused, 1)
        self.assertIsInstance(SourceNetworks(), SourceNetworks)


class IdentifyTests(MachineTestCase):
    def test_a_known_modem_attaches_and_its_trailing_bytes_go_to_the_decoder(self) -> None:
        m = self.connected()
        actions = m.data(REGISTRATION + b"push")
        self.assertIs(m.state, S.ATTACHED)
        self.assertEqual(kinds(actions), [StartTimer, CancelTimer, Identified, Claim, Attach,
                                          ToHandler])
        self.assertIn(Claim((NAME, NAME)), actions)
        self.assertIn(ToHandler(b"push"), actions)
        self.assertEqual((m.meters, self.stats.identified), ([METER], 1))

    def test_a_registration_split_over_chunks(self) -> None:
        m = self.connected()
        self.assertEqual(kinds(m.data(REGISTRATION[:5])), [StartTimer])
        m.data(REGISTRATION[5:])
        self.assertIs(m.state, S.ATTACHED)

    def test_garbage_before_the_registration_is_counted(self) -> None:
        m = self.connected()
        m.data(b"AT\r\nCONNECT\r\n" + REGISTRATION)
        self.assertIs(m.state, S.ATTACHED)
        self.assertEqual((m.garbage, self.stats.garbage_bytes), (13, 13))

    def test_too_much_garbage_closes_with_a_rate_limited_log(self) -> None:
        m = self.connected(GprsSettings(max_garbage=16))
        actions = m.data(b"AT\r\n" * 16)
        self.assertIs(m.state, S.CLOSING)
        self.assertIn(Close(), actions)
        self.assertTrue(all(a.limited for a in logs(actions)))
        self.assertEqual((self.stats.unidentified, self.stats.garbage_bytes), (1, 64))
        self.assertEqual(m.ended, "no registration (identifying)")

    def test_the_identify_timeout_closes(self) -> None:
        m = self.connected()
        actions = m.timeout(Timer.IDENTIFY)
        self.assertIs(m.state, S.CLOSING)
        self.assertIn(Close(), actions)
        self.assertEqual(self.stats.unidentified, 1)

    def test_heartbeats_are_stripped_and_counted_once_identified(self) -> None:
        m = self.attached(GprsSettings(heartbeats=(b"PING",)))
        self.assertEqual(kinds(m.data(b"PINGPING")), [StartTimer])
        self.assertIn(ToHandler(b"push"), m.data(b"PINGpush"))
        self.assertEqual((m.heartbeats, self.stats.heartbeats), (3, 3))

    def test_a_heartbeat_before_identification_is_garbage(self) -> None:
        m = self.connected(GprsSettings(heartbeats=(b"PING",)))
        m.data(b"PING" + REGISTRATION)
        self.assertEqual((m.garbage, m.heartbeats), (4, 0))


class UnknownModemTests(MachineTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.world.meters.clear()

    def test_quarantine_claims_the_name_and_drops_data(self) -> None:
        m = self.connected()
        actions = m.data(REGISTRATION)
        self.assertIs(m.state, S.QUARANTINED)
        self.assertIn(Claim((NAME,)), actions)
        self.assertEqual(kinds(m.data(b"push")), [StartTimer])
        self.assertEqual(self.stats.quarantined, 1)

    def test_a_quarantined_modem_attaches_once_a_meter_names_it(self) -> None:
        m = self.connected()
        m.data(REGISTRATION)
        self.world.meters[NAME] = [METER]
        actions = m.data(b"push")
        self.assertIs(m.state, S.ATTACHED)
        self.assertEqual(kinds(actions), [StartTimer, Claim, Attach])

    def test_reject_closes(self) -> None:
        m = self.connected(GprsSettings(unknown="reject"))
        actions = m.data(REGISTRATION)
        self.assertIs(m.state, S.CLOSING)
        self.assertIn(Close(), actions)
        self.assertEqual(self.stats.rejected, 1)

    def test_register_then_attach_with_what_came_meanwhile(self) -> None:
        m = self.connected(GprsSettings(unknown="register"))
        self.assertIn(Register(), m.data(REGISTRATION + b"a"))
        self.assertIs(m.state, S.REGISTERING)
        m.data(b"b")
        actions = m.registered(METER)
        self.assertIs(m.state, S.ATTACHED)
        self.assertIn(ToHandler(b"ab"), actions)

    def test_what_comes_while_registering_is_bounded(self) -> None:
        # A stranger streaming while its meter record is stored is not buffered without end:
        # the first MAX_HELD_BYTES reach the handler, the rest is dropped, counted, logged.
        m = self.connected(GprsSettings(unknown="register"))
        m.data(REGISTRATION)
        limit = gprs_session.MAX_HELD_BYTES
        m.data(b"x" * (limit - 10))
        actions = m.data(b"y" * 30)
        self.assertEqual(self.stats.unhandled_bytes, 20)
        (warning,) = [a for a in logs(actions) if a.level == "warn"]
        self.assertTrue(warning.limited)
        m.data(b"z" * 1000)
        self.assertEqual(self.stats.unhandled_bytes, 1020)
        actions = m.registered(METER)
        self.assertIn(ToHandler(b"x" * (limit - 10) + b"y" * 10), actions)

    def test_a_failed_registration_closes_with_the_failure_logged(self) -> None:
        m = self.connected(GprsSettings(unknown="register"))
        m.data(REGISTRATION)
        actions = m.registration_failed("store down")
        self.assertIs(m.state, S.CLOSING)
        (failure,) = [a for a in logs(actions) if a.level == "failure"]
        self.assertEqual(failure.failure, "store down")

    def test_a_registration_finished_after_the_modem_left_is_refused(self) -> None:
        m = self.connected(GprsSettings(unknown="register"))
        m.data(REGISTRATION)
        m.lost("gone")
        self.assertEqual(kinds(m.registered(METER)), [])
        self.assertEqual(self.stats.refused_inputs, 1)


class ProofTests(MachineTestCase):
    def test_a_wrong_secret_closes(self) -> None:
        self.world.meters[NAME] = [Meter("m1", "dlms", f"gprs:{NAME}",
                                         metadata={"modem_secret": "right"})]
        m = self.connected()
        actions = m.data(f"ID:{IMEI};SECRET=wrong\r\n".encode())
        self.assertIs(m.state, S.CLOSING)
        self.assertEqual(len(logs(actions, "gprs_proof_failed")), 1)
        self.assertEqual(self.stats.proof_failed, 1)

    def test_the_right_secret_attaches(self) -> None:
        self.world.meters[NAME] = [Meter("m1", "dlms", f"gprs:{NAME}",
                                         metadata={"modem_secret": "right"})]
        m = self.connected()
        m.data(f"ID:{IMEI};SECRET=right\r\n".encode())
        self.assertIs(m.state, S.ATTACHED)

    def test_a_certificate_naming_another_modem_closes(self) -> None:
        self.world.certificate = {"imei=111111111111111"}
        m = self.connected()
        m.data(REGISTRATION)
        self.assertIs(m.state, S.CLOSING)
        self.assertEqual(self.stats.proof_failed, 1)

    def test_a_certificate_naming_the_modem_attaches(self) -> None:
        self.world.certificate = {IMEI}
        self.assertIs(self.attached().state, S.ATTACHED)


class ConflictTests(MachineTestCase):
    def test_keep_holds_the_newcomer_then_closes_it(self) -> None:
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now, meter="m1")
        m = self.connected()
        actions = m.data(REGISTRATION + b"push")
        self.assertIs(m.state, S.CONTESTED)
        self.assertIn(Release(), actions)
        self.assertIn(StartTimer(Timer.CONTEST, 30.0), actions)
        (conflict,) = logs(actions, "gprs_identity_conflict")
        self.assertEqual((conflict.fields["incumbent"], conflict.fields["meter"]), (1, "m1"))
        self.assertEqual(kinds(m.data(b"more")), [StartTimer])  # dropped, not kept
        actions = m.timeout(Timer.CONTEST)
        self.assertIs(m.state, S.CLOSING)
        self.assertIn(Close(), actions)
        self.assertEqual((self.stats.conflicts, self.stats.conflicts_closed), (1, 1))

    def test_replace_when_silent_replaces_a_silent_incumbent_at_once(self) -> None:
        settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0)
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now - 61)
        m = self.connected(settings)
        actions = m.data(REGISTRATION)
        self.assertIs(m.state, S.ATTACHED)
        self.assertEqual(kinds(actions)[:5],
                         [StartTimer, CancelTimer, Identified, Replace, Claim])

    def test_replace_when_silent_waits_out_the_window_and_lets_in_the_held_bytes(self) -> None:
        settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0)
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now - 20)
        m = self.connected(settings)
        actions = m.data(REGISTRATION + b"a")
        self.assertIn(StartTimer(Timer.CONTEST, 40.0), actions)
        m.data(b"b")
        self.now += 40
        actions = m.timeout(Timer.CONTEST)
        self.assertIs(m.state, S.ATTACHED)
        self.assertIn(Replace(1), actions)
        self.assertIn(ToHandler(b"ab"), actions)

    def test_replace_when_silent_closes_the_newcomer_if_the_incumbent_answered(self) -> None:
        settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0)
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now - 20)
        m = self.connected(settings)
        m.data(REGISTRATION)
        self.now += 40
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now - 1)
        actions = m.timeout(Timer.CONTEST)
        self.assertIs(m.state, S.CLOSING)
        self.assertNotIn(Replace(1), actions)

    def test_held_bytes_are_bounded(self) -> None:
        settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0)
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now)
        m = self.connected(settings)
        m.data(REGISTRATION)
        m.data(b"x" * (MAX_HELD_BYTES + 10))
        self.world.held.clear()
        self.now += 60
        (handed,) = [a for a in m.timeout(Timer.CONTEST) if isinstance(a, ToHandler)]
        self.assertEqual(len(handed.data), MAX_HELD_BYTES)

    def test_a_registration_is_not_made_for_a_contested_modem(self) -> None:
        self.world.meters.clear()
        self.world.held[NAME] = Holder(1, "10.9.9.9:1", heard=self.now)
        m = self.connected(GprsSettings(unknown="register"))
        self.assertNotIn(Register(), m.data(REGISTRATION))
        self.assertIs(m.state, S.CONTESTED)


class PipeTests(MachineTestCase):
    def test_a_pull_takes_the_socket_and_gives_it_back(self) -> None:
        m = self.attached()
        self.assertEqual(m.pipe_requested("gprs:imei=1", push_pending=False),
                         [OpenPipe("gprs:imei=1")])
        self.assertIs(m.state, S.PIPE)
        self.assertIn(ToPipe(b"answer"), m.data(b"answer"))
        self.assertEqual(m.send(b"request"), [Send(b"request")])
        self.assertEqual(m.bytes_out, 7)
        self.assertEqual(m.pipe_released(), [ReleasePipe()])
        self.assertIs(m.state, S.ATTACHED)
        self.assertIn(ToHandler(b"push"), m.data(b"push"))

    def test_a_push_under_way_is_let_finish(self) -> None:
        m = self.attached()
        self.assertEqual(m.pipe_requested("gprs:imei=1", push_pending=True),
                         [StartTimer(Timer.PIPE_WAIT, PIPE_WAIT)])
        self.assertIs(m.state, S.WAITING)
        self.assertEqual(m.shown_state, "attached")
        self.assertIn(ToHandler(b"rest"), m.data(b"rest"))
        self.assertEqual(m.push_finished(),
                         [CancelTimer(Timer.PIPE_WAIT), OpenPipe("gprs:imei=1")])
        self.assertIs(m.state, S.PIPE)

    def test_the_wait_for_a_push_is_bounded(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=True)
        self.assertEqual(m.timeout(Timer.PIPE_WAIT), [OpenPipe("gprs:imei=1")])

    def test_one_job_at_a_time(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=False)
        (refused,) = [a for a in m.pipe_requested("gprs:imei=2", False)
                      if isinstance(a, RefusePipe)]
        self.assertEqual(refused.why, f"modem {NAME} is busy with gprs:imei=1")

    def test_no_pull_over_a_quarantined_modem(self) -> None:
        m = self.in_state(S.QUARANTINED)
        (refused,) = [a for a in m.pipe_requested("gprs:imei=1", False)
                      if isinstance(a, RefusePipe)]
        self.assertEqual(refused.why, f"modem {NAME} is quarantined: no pull over it")

    def test_idle_in_a_pipe_loses_the_job(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=False)
        actions = m.timeout(Timer.IDLE)
        self.assertIn(LosePipe("the modem went silent (idle timeout)"), actions)
        self.assertIn(Close(), actions)
        self.assertEqual(self.stats.idle_closed, 1)

    def test_a_job_letting_go_while_the_modem_closes(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=False)
        m.close("test")
        self.assertEqual(m.pipe_released(), [ReleasePipe()])
        self.assertEqual(kinds(m.lost("gone")), [Unregister, Gone])


class EndingTests(MachineTestCase):
    def test_close_cancels_the_timers_once(self) -> None:
        m = self.attached()
        actions = m.close("test")
        self.assertEqual(kinds(actions), [CancelTimer] * len(Timer) + [Close])
        self.assertEqual(m.close("again"), [])
        self.assertEqual(m.ended, "test (attached)")

    def test_lost_leaves_the_registry_and_tells_the_observers(self) -> None:
        m = self.attached()
        actions = m.lost("gone")
        self.assertIs(m.state, S.CLOSED)
        self.assertEqual(kinds(actions), [CancelTimer] * len(Timer) + [Unregister, Gone])
        self.assertIn(Gone((METER,)), actions)

    def test_lost_fails_a_waiting_job(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=True)
        self.assertIn(FailPipeWait("connection lost (gone)"), m.lost("gone"))

    def test_a_stranger_leaving_is_logged_rate_limited(self) -> None:
        m = self.connected()
        m.data(b"junk")
        (gone,) = logs(m.lost("gone"))
        self.assertTrue(gone.limited)

    def test_replaced_gives_way(self) -> None:
        m = self.attached()
        m.pipe_requested("gprs:imei=1", push_pending=False)
        actions = m.replaced("10.5.5.5:2")
        self.assertEqual(kinds(actions),
                         [LosePipe, Unregister] + [CancelTimer] * len(Timer) + [Close])
        self.assertIs(m.state, S.CLOSING)
        self.assertEqual(self.stats.replaced, 1)
        self.assertEqual(len(logs(actions, "gprs_session_replaced")), 1)

    def test_bytes_after_close_are_counted_and_dropped(self) -> None:
        m = self.attached()
        m.close("test")
        self.assertEqual(m.data(b"late"), [])
        self.assertEqual(m.bytes_in, len(REGISTRATION) + 4)


class AdapterTests(ChannelTestCase):
    """The Twisted adapter (fep.channels.gprs.ModemSession) performing the machine's
    actions: refusals reach neither the reactor nor the caller as exceptions."""

    def test_a_registration_stored_after_the_modem_left_is_refused_quietly(self) -> None:
        self.channel.settings = GprsSettings(unknown="register")
        self.directory.replace([])
        stored: Deferred[int] = Deferred()
        self.store.add_meters = lambda meters: stored  # type: ignore[method-assign]
        session, _ = self.connect()
        session.dataReceived(REGISTRATION)
        self.assertIs(session.state, S.REGISTERING)
        session.connectionLost(Failure(ConnectionDone()))
        stored.callback(1)
        self.assertIs(session.state, S.CLOSED)
        self.assertEqual(self.channel.stats.refused_inputs, 1)
        self.assertEqual(self.channel.sessions(), [])

    def test_a_job_letting_go_while_the_modem_closes_is_told_at_once(self) -> None:
        session, _ = self.connect()
        session.dataReceived(REGISTRATION)
        job = self.successResultOf(session.open_pipe(Factory.forProtocol(Answering), "gprs:x"))
        assert isinstance(job, Answering)
        session.drop("test")
        job.transport.loseConnection()  # type: ignore[union-attr]
        self.clock.advance(0)
        self.assertTrue(job.lost.called)
        job.reason.trap(ConnectionDone)

    def test_a_write_after_close_is_refused_and_not_sent(self) -> None:
        session, transport = self.connect()
        session.dataReceived(REGISTRATION)
        session.drop("test")
        session.write(b"late")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.channel.stats.refused_inputs, 1)
