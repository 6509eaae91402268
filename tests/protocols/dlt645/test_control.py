"""DL/T 645 commands: the relay-control frame (a published one byte for byte), the meter's
refusals named, and every command run against the simulated meter in memory showing what it
did to the meter (relay opened and closed, demand reset counted and zeroed, clock within
1 s, events cleared), each refusal an error naming meter, command and the meter's code;
then the Twisted side over loopback TCP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.errors import ConfigError, NotSupported, ProtocolError, SessionTimeout
from fep.model import Meter
from fep.protocols.dlt645 import services
from fep.protocols.dlt645.client import Failed, Resent, Send
from fep.protocols.dlt645.control import (
    CommandClient,
    CommandRefused,
    CommandUnauthorized,
    Done,
    Step,
)
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ
from fep.protocols.dlt645.frames import Frame, FrameDecoder, decode_frame
from fep.protocols.dlt645.services import (
    ControlErrorStatus,
    ErrorStatus,
    MeterErrorResponse,
    Password,
    RelayAction,
    Unauthorized,
)
from fep.protocols.dlt645.session import Dlt645Protocol, password_for, settings_for
from fep.sim.dlt645 import Dlt645BusFactory, SimEvent, SimulatedDlt645Meter
from tests.protocols.dlt645.published import FRAMES

reactor: Any = global_reactor
START = 1_709_280_000.0  # 2024-03-01 08:00:00 UTC, 16:00 on the meter's UTC+8 clock
ADDRESS = "000000123456"
RELAY_PASSWORD = "02123456"  # level 02, password 123456: the simulator's relay level


class Clock(MemoryReactorClock):
    """One time for fep (reactor.seconds) and the simulated meter (its clock)."""

    def __init__(self, now: float = START) -> None:
        super().__init__()
        self.advance(now)

    def __call__(self) -> float:
        return self.seconds()


def meter_record(**metadata: str) -> Meter:
    md = {"dlt645_password": RELAY_PASSWORD, "dlt645_operator": "12345678", **metadata}
    return Meter(id="m1", protocol="dlt645", route="tcp:127.0.0.1:1", address=ADDRESS,
                 metadata={k: v for k, v in md.items() if v})


def exchange(client: CommandClient, meters: list[SimulatedDlt645Meter]) -> Any:
    """Run a command client against simulated meters in memory; its last action."""
    pending = list(client.start())
    last: Any = None
    while pending:
        action = pending.pop(0)
        last = action
        if isinstance(action, Send):
            for request in FrameDecoder().receive(action.data):
                for sim in meters:
                    answer = sim.answer(request)
                    if answer is not None:
                        pending += client.receive(answer.encode(preamble=4))
    return last


class Harness:
    def __init__(self, testcase: unittest.TestCase, **sim: Any) -> None:
        self.clock = Clock()
        self.sim = SimulatedDlt645Meter(clock=self.clock, **sim)
        self.protocol = Dlt645Protocol()

    def run(self, command: str, meter: Meter | None = None, **params: Any) -> Any:
        meter = meter or meter_record()
        settings = settings_for(meter)
        steps, outcome = self.protocol._command_steps(self.clock, meter, settings, command,
                                                      params)
        last = exchange(CommandClient(settings, command, steps), [self.sim])
        if isinstance(last, Failed):
            raise last.error
        assert isinstance(last, Done), last
        return outcome(last.answers)

    def set_clock(self, meter: Meter | None = None) -> None:
        meter = meter or meter_record()
        settings = settings_for(meter)
        password = password_for(meter)
        if meter.metadata.get("dlt645_clock_set") == "broadcast" or password is None:
            steps = self.protocol._broadcast_steps(self.clock, settings)
        else:
            steps = self.protocol._clock_write_steps(self.clock, meter, settings, password)
        last = exchange(CommandClient(settings, "time-set", steps), [self.sim])
        if isinstance(last, Failed):
            raise last.error
        if len(steps) == 5:
            self.protocol._broadcast_taken(self.clock, meter, settings, last.answers)

    def offset(self) -> float:
        return self.sim.now().timestamp() - self.clock.seconds()


class RelayControlFrameTests(unittest.TestCase):
    def test_trip_is_the_published_holley_frame_byte_for_byte(self) -> None:
        frame = services.relay_control("111111111111", RelayAction.TRIP, Password(0, "000000"),
                                       "00000000", datetime(2018, 5, 12, 15, 41, 24))
        self.assertEqual(frame.encode(), FRAMES["holley_relay_control_trip_request"])
        self.assertEqual(decode_frame(FRAMES["holley_relay_control_trip_request"]), frame)

    def test_layout_password_operator_action_reserved_and_validity(self) -> None:
        frame = services.relay_control(ADDRESS, RelayAction.DIRECT_CLOSE, Password(2, "123456"),
                                       "12345678", datetime(2024, 3, 1, 16, 15, 0))
        self.assertEqual(frame.control, 0x1C)
        self.assertEqual(frame.data, bytes.fromhex("02563412 78563412 1C 00 001516010324"))

    def test_action_codes_are_the_standards(self) -> None:
        self.assertEqual([int(a) for a in RelayAction],
                         [0x1A, 0x1B, 0x1C, 0x2A, 0x2B, 0x3A, 0x3B])

    def test_1997_write_and_demand_reset_layouts(self) -> None:
        write = services.write_data_1997(ADDRESS, 0xC011, bytes.fromhex("000016"),
                                         Password(4, "000000"))
        self.assertEqual((write.control, write.data),
                         (0x04, bytes.fromhex("11C0 04000000 000016")))
        reset = services.max_demand_reset_1997(ADDRESS, Password(4, "000000"))
        self.assertEqual((reset.control, reset.data), (0x10, bytes.fromhex("04000000")))


class AbnormalAnswerTests(unittest.TestCase):
    def refused(self, function: int, data: bytes) -> MeterErrorResponse:
        request = Frame(ADDRESS, function)
        answer = Frame(ADDRESS, function | 0xC0, data)
        with self.assertRaises(MeterErrorResponse) as caught:
            services.check_response(answer, request, meter="m1")
        return caught.exception

    def test_every_error_bit_of_the_err_byte_is_named(self) -> None:
        names = {
            ErrorStatus.OTHER: "other error",
            ErrorStatus.NO_REQUESTED_DATA: "no requested data",
            ErrorStatus.UNAUTHORIZED: "wrong password or unauthorised",
            ErrorStatus.BAUD_NOT_CHANGEABLE: "baud rate cannot be changed",
            ErrorStatus.YEAR_ZONES_EXCEEDED: "too many year time zones",
            ErrorStatus.DAY_PERIODS_EXCEEDED: "too many daily periods",
            ErrorStatus.TARIFFS_EXCEEDED: "too many tariffs",
        }
        for bit, text in names.items():
            error = self.refused(services.Function.WRITE_DATA, bytes([bit]))
            self.assertEqual(error.reasons, [text])
            self.assertIn(f"(error status 0x{int(bit):02X})", str(error))
            self.assertEqual(error.meter, "m1")

    def test_a_one_byte_relay_control_refusal_is_the_err_byte(self) -> None:
        error = self.refused(services.Function.RELAY_CONTROL, b"\x04")
        self.assertIsInstance(error, Unauthorized)
        self.assertEqual((error.code, error.reasons), ("0x04", ["wrong password or unauthorised"]))
        self.assertIn("refused relay control", str(error))

    def test_the_two_byte_relay_control_word_is_named_bit_by_bit(self) -> None:
        error = self.refused(services.Function.RELAY_CONTROL, b"\x30\x02")
        self.assertEqual(error.code, "0x0230")
        self.assertEqual(error.reasons, ["command validity time passed",
                                         "trip refused: supply guaranteed", "bit 9"])
        self.assertNotIsInstance(error, Unauthorized)
        word = self.refused(services.Function.RELAY_CONTROL, b"\x04\x00")
        self.assertIsInstance(word, Unauthorized)
        self.assertEqual(word.code, "0x0004")


class RelayCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.h = Harness(self)

    def test_disconnect_opens_the_relay_and_the_meter_keeps_the_operator_code(self) -> None:
        done = self.h.run("disconnect")
        self.assertEqual((self.h.sim.relay_closed, self.h.sim.relay_command_open), (False, True))
        self.assertEqual(done["relay_control"], "trip")
        self.assertEqual((done["relay"], done["relay_command"]), ("open", "open"))
        self.assertEqual(self.h.sim.operators, [("relay control trip", "12345678")])

    def test_reconnect_allows_the_customer_to_close_it_by_the_button(self) -> None:
        self.h.run("disconnect")
        done = self.h.run("reconnect")
        self.assertEqual(done["relay_control"], "close-allowed")
        self.assertEqual((done["relay"], done["relay_command"]), ("open", "closed"))
        self.assertFalse(self.h.sim.relay_closed)
        self.assertTrue(self.h.sim.press_button())
        self.assertEqual(self.h.run("relay-state")["relay"], "closed")

    def test_reconnect_direct_closes_it_at_once(self) -> None:
        self.h.run("disconnect")
        done = self.h.run("reconnect", mode="direct")
        self.assertEqual((done["relay_control"], done["relay"]), ("direct-close", "closed"))
        self.assertTrue(self.h.sim.relay_closed)

    def test_relay_state_reads_status_word_3(self) -> None:
        self.assertEqual(self.h.run("relay-state"), {
            "relay": "closed", "relay_command": "closed", "pre_trip_alarm": "off",
            "status_word_3": "0000"})
        self.h.sim.relay_closed, self.h.sim.relay_command_open = False, True
        self.assertEqual(self.h.run("relay-state")["status_word_3"], "0050")
        # A meter that trips after a delay: commanded open, the relay still closed.
        self.h.sim.relay_closed = True
        state = self.h.run("relay-state")
        self.assertEqual((state["relay"], state["relay_command"], state["status_word_3"]),
                         ("closed", "open", "0040"))

    def test_alarm_and_guarantee_are_parameters_and_a_guaranteed_supply_refuses_a_trip(
        self,
    ) -> None:
        done = self.h.run("parameter-set", alarm="on", guarantee="on")
        self.assertEqual(done["relay_control"], "alarm, guarantee")
        self.assertEqual((self.h.sim.alarm, self.h.sim.guarantee), (True, True))
        self.assertEqual(done["pre_trip_alarm"], "on")
        with self.assertRaises(CommandRefused) as caught:
            self.h.run("disconnect")
        error = caught.exception
        self.assertEqual((error.status, error.code), (ControlErrorStatus.GUARANTEED, "0x0020"))
        self.assertEqual(str(error), "meter m1: disconnect refused by the meter (relay control "
                                     "(trip)): trip refused: supply guaranteed (error status "
                                     "0x0020)")
        self.assertTrue(self.h.sim.relay_closed)
        self.h.run("parameter-set", alarm="off", guarantee="off")
        self.assertEqual((self.h.sim.alarm, self.h.sim.guarantee), (False, False))
        self.h.run("disconnect")
        self.assertFalse(self.h.sim.relay_closed)

    def test_a_wrong_password_is_refused_naming_meter_command_and_code(self) -> None:
        with self.assertRaises(CommandUnauthorized) as caught:
            self.h.run("disconnect", meter_record(dlt645_password="02999999"))
        error = caught.exception
        self.assertEqual(str(error), "meter m1: disconnect refused by the meter (relay control "
                                     "(trip)): wrong password or unauthorised (error status "
                                     "0x0004)")
        self.assertEqual((error.meter, error.protocol, error.final), ("m1", "dlt645", True))
        self.assertTrue(self.h.sim.relay_closed)

    def test_a_lower_level_password_is_not_enough_for_the_relay(self) -> None:
        writer = meter_record(dlt645_password="04000000")
        with self.assertRaises(CommandUnauthorized):
            self.h.run("disconnect", writer)
        self.h.run("demand-reset", writer)  # level 4 is enough for a demand reset
        self.assertEqual(self.h.sim.demand_resets, 1)

    def test_a_meter_in_plain_mode_answers_the_err_byte(self) -> None:
        h = Harness(self, control_error_word=False)
        with self.assertRaises(CommandUnauthorized) as caught:
            h.run("disconnect", meter_record(dlt645_password="02999999"))
        self.assertIn("(error status 0x04)", str(caught.exception))

    def test_a_command_the_meter_gets_after_its_validity_time_is_refused(self) -> None:
        h = Harness(self, clock_offset=20 * 60)  # the meter's clock 20 minutes ahead
        with self.assertRaises(CommandRefused) as caught:
            h.run("disconnect", valid="15")
        self.assertEqual(caught.exception.code, "0x0010")
        self.assertIn("command validity time passed", str(caught.exception))
        self.assertTrue(h.sim.relay_closed)
        h.run("disconnect", valid="30")
        self.assertFalse(h.sim.relay_closed)

    def test_commands_without_a_password_or_with_bad_params_fail_before_sending(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.h.run("disconnect", meter_record(dlt645_password=""))
        self.assertIn("dlt645_password", str(caught.exception))
        for command, params in (("reconnect", {"mode": "maybe"}),
                                ("parameter-set", {"tariff": "2"}),
                                ("parameter-set", {"alarm": "loud"})):
            with self.assertRaises(ConfigError):
                self.h.run(command, **params)
        self.assertEqual(self.h.sim.log, [])

    def test_silence_is_asked_again_then_a_timeout_naming_the_command(self) -> None:
        settings = settings_for(meter_record())
        client = CommandClient(settings, "relay-state", [
            Step("read of status word 3", lambda _: services.read_data(ADDRESS, 0x04000503))])
        client.start()
        self.assertIsInstance(client.timeout()[0], Resent)
        (failed,) = client.timeout()
        assert isinstance(failed, Failed)
        self.assertIsInstance(failed.error, SessionTimeout)
        self.assertEqual(str(failed.error), "meter m1: relay-state: no valid answer to read of "
                                            "status word 3")


class ArbitraryAnswerTests(unittest.TestCase):
    """Whatever the line carries, a command gives actions, and its end is Done or a
    ProtocolError naming the meter; the outcome of a relay-state read of any answer is a
    state or a ProtocolError."""

    def client(self) -> tuple[CommandClient, Any]:
        meter = meter_record()
        settings = settings_for(meter)
        steps, outcome = Dlt645Protocol()._command_steps(Clock(), meter, settings,
                                                         "disconnect", {})
        return CommandClient(settings, "disconnect", steps), outcome

    def check_end(self, actions: list[Any], outcome: Any) -> None:
        for action in actions:
            if isinstance(action, Failed):
                self.assertIsInstance(action.error, ProtocolError)
                self.assertIn("meter m1", str(action.error))
            elif isinstance(action, Done):
                try:
                    outcome(action.answers)
                except ProtocolError as e:
                    self.assertEqual(e.meter, "m1")

    @given(st.lists(st.binary(max_size=40), max_size=8))
    def test_arbitrary_line_bytes_give_actions_only(self, chunks: list[bytes]) -> None:
        client, outcome = self.client()
        actions: list[Any] = list(client.start())
        for chunk in chunks:
            actions += client.receive(chunk)
        actions += client.timeout() + client.timeout()
        self.check_end(actions, outcome)

    @given(st.lists(st.tuples(st.sampled_from([0x1C, 0x11, 0x19, 0x14]), st.booleans(),
                              st.binary(max_size=24)), max_size=4))
    def test_well_framed_answers_with_arbitrary_data_give_actions_only(
        self, answers: list[tuple[int, bool, bytes]],
    ) -> None:
        client, outcome = self.client()
        actions: list[Any] = list(client.start())
        for function, error, data in answers:
            frame = Frame(ADDRESS, function | 0x80 | (0x40 if error else 0), data)
            actions += client.receive(frame.encode())
        self.check_end(actions, outcome)


class ResetTests(unittest.TestCase):
    def setUp(self) -> None:
        self.h = Harness(self)

    def test_demand_reset_counts_and_zeroes_the_maximum_demand(self) -> None:
        self.assertEqual(self.h.sim.demand, Decimal("3.4567"))
        self.h.run("demand-reset")
        self.assertEqual((self.h.sim.demand_resets, self.h.sim.demand), (1, 0))
        self.assertEqual(self.h.sim.operators, [("demand reset", "12345678")])

    def test_a_refused_demand_reset_names_meter_command_and_code(self) -> None:
        with self.assertRaises(CommandUnauthorized) as caught:
            self.h.run("demand-reset", meter_record(dlt645_password="04111111"))
        self.assertEqual(str(caught.exception), "meter m1: demand-reset refused by the meter "
                         "(maximum demand reset): wrong password or unauthorised (error status "
                         "0x04)")
        self.assertEqual(self.h.sim.demand_resets, 0)

    def test_event_log_clear_clears_every_record_or_one_family(self) -> None:
        self.h.run("event-log-clear", di="03300D00")
        self.assertEqual({e.base for e in self.h.sim.events}, {0x03110000})
        self.h.run("event-log-clear")
        self.assertEqual(self.h.sim.events, [])
        self.assertEqual(self.h.sim.log[-1], "event reset FFFFFFFF")


class ClockTests(unittest.TestCase):
    def test_time_set_writes_date_and_time_with_the_password(self) -> None:
        h = Harness(self, clock_offset=-3 * 86400 - 4000.6)
        h.set_clock()
        self.assertLess(abs(h.offset()), 1.0)
        self.assertEqual(h.sim.log[-2:], ["write 04000101", "write 04000102"])

    def test_a_clock_write_with_a_wrong_password_names_meter_command_and_code(self) -> None:
        h = Harness(self, clock_offset=600)
        with self.assertRaises(CommandUnauthorized) as caught:
            h.set_clock(meter_record(dlt645_password="04999999"))
        self.assertIn("meter m1: time-set refused by the meter (write of the date (DI 04000101))",
                      str(caught.exception))
        self.assertEqual(h.offset(), 600)

    def test_broadcast_time_within_its_limits_sets_the_clock_once_a_day(self) -> None:
        h = Harness(self, clock_offset=90)
        broadcast = meter_record(dlt645_clock_set="broadcast")
        h.set_clock(broadcast)
        self.assertLess(abs(h.offset()), 1.0)
        h.sim.clock_offset = 60  # drifts again the same day: the meter takes no second one
        with self.assertRaises(ProtocolError) as caught:
            h.set_clock(broadcast)
        self.assertIn("did not take the broadcast time", str(caught.exception))
        self.assertEqual(h.sim.log[-3], "broadcast time ignored: one a day")
        h.clock.advance(86400)
        h.set_clock(broadcast)
        self.assertLess(abs(h.offset()), 1.0)

    def test_broadcast_time_is_not_sent_beyond_5_minutes(self) -> None:
        h = Harness(self, clock_offset=400)
        with self.assertRaises(ProtocolError) as caught:
            h.set_clock(meter_record(dlt645_password=""))
        self.assertIn("+400 s off", str(caught.exception))
        self.assertIn("dlt645_clock_set = write", str(caught.exception))
        self.assertNotIn("broadcast time", h.sim.log)
        self.assertEqual(h.offset(), 400)

    def test_broadcast_time_is_not_sent_near_midnight(self) -> None:
        h = Harness(self, clock_offset=30)
        # 23:57 on the meter's UTC+8 clock.
        midnight = datetime(2024, 3, 2, tzinfo=DEFAULT_METER_TZ).timestamp()
        h.clock.advance(midnight - 180 - h.clock.seconds())
        with self.assertRaises(ProtocolError) as caught:
            h.set_clock(meter_record(dlt645_clock_set="broadcast"))
        self.assertIn("within 5 minutes of midnight", str(caught.exception))
        self.assertEqual(h.offset(), 30)


class Edition1997Tests(unittest.TestCase):
    def test_demand_reset_and_clock_write_on_a_1997_meter(self) -> None:
        h = Harness(self, edition=1997, clock_offset=-7200.4)
        meter = meter_record(dlt645_edition="1997", dlt645_password="04000000")
        h.run("demand-reset", meter)
        self.assertEqual((h.sim.demand_resets, h.sim.demand), (1, 0))
        h.set_clock(meter)
        self.assertLess(abs(h.offset()), 1.0)
        self.assertEqual(h.sim.log[-2:], ["write C010", "write C011"])

    def test_broadcast_time_on_a_1997_meter(self) -> None:
        h = Harness(self, edition=1997, clock_offset=60)
        h.set_clock(meter_record(dlt645_edition="1997", dlt645_password=""))
        self.assertLess(abs(h.offset()), 1.0)
        self.assertEqual(h.sim.log, ["read C010", "read C011", "broadcast time", "read C010",
                                     "read C011"])

    def test_a_1997_meter_refuses_a_wrong_password_with_its_own_bits(self) -> None:
        h = Harness(self, edition=1997)
        with self.assertRaises(CommandUnauthorized) as caught:
            h.run("demand-reset", meter_record(dlt645_edition="1997",
                                               dlt645_password="04999999"))
        self.assertIn("wrong password (error status 0x04)", str(caught.exception))

    def test_the_1997_variant_has_no_relay_nor_event_reset(self) -> None:
        variant = Dlt645Protocol.variant(meter_record(dlt645_edition="1997"))
        assert variant is not None
        self.assertEqual(variant[0], "DL/T 645-1997")
        self.assertEqual(variant[1], {"demand-reset", "time-set", "time-sync"})
        self.assertIsNone(Dlt645Protocol.variant(meter_record()))

    def test_run_command_refuses_what_the_1997_edition_lacks_without_connecting(self) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 9)
        d = Dlt645Protocol().run_command(reactor, endpoint, meter_record(dlt645_edition="1997"),
                                         "disconnect", {}, 1.0, lambda _: None)
        error = self.failureResultOf(d, NotSupported).value
        self.assertEqual(str(error), "meter m1: DL/T 645-1997 has no disconnect")


class OverTcpTests(unittest.TestCase):
    """The Twisted side: run_command and set_clock over loopback TCP to the simulator."""

    timeout = 30

    def setUp(self) -> None:
        self.sim = SimulatedDlt645Meter(events=[SimEvent(0x03110000, datetime(2024, 1, 1,
                                                                              tzinfo=UTC))])
        self.factory = Dlt645BusFactory([self.sim], reactor)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    @inlineCallbacks
    def test_disconnect_then_direct_reconnect(self) -> Any:
        protocol = Dlt645Protocol()
        done = yield protocol.run_command(reactor, self.endpoint, meter_record(), "disconnect",
                                          {}, 5.0, lambda _: None)
        self.assertEqual(done["relay"], "open")
        self.assertFalse(self.sim.relay_closed)
        done = yield protocol.run_command(reactor, self.endpoint, meter_record(), "reconnect",
                                          {"mode": "direct"}, 5.0, lambda _: None)
        self.assertEqual(done["relay"], "closed")
        self.assertTrue(self.sim.relay_closed)

    @inlineCallbacks
    def test_a_refusal_fails_the_deferred_naming_meter_command_and_code(self) -> Any:
        d = Dlt645Protocol().run_command(reactor, self.endpoint,
                                         meter_record(dlt645_password="02000001"),
                                         "event-log-clear", {}, 5.0, lambda _: None)
        error = yield self.assertFailure(d, CommandUnauthorized)
        self.assertIn("meter m1: event-log-clear refused by the meter (event reset (DI "
                      "FFFFFFFF)): wrong password or unauthorised (error status 0x04)",
                      str(error))
        self.assertEqual(len(self.sim.events), 1)

    @inlineCallbacks
    def test_set_clock_writes_the_clock_within_a_second(self) -> Any:
        self.sim.clock_offset = -5000.0
        yield Dlt645Protocol().set_clock(reactor, self.endpoint, meter_record(), 5.0)
        self.assertLess(abs(self.sim.now().timestamp() - reactor.seconds()), 1.0)

    @inlineCallbacks
    def test_set_clock_by_broadcast_reads_the_clock_back(self) -> Any:
        self.sim.clock_offset = 100.0
        meter = meter_record(dlt645_clock_set="broadcast")
        yield Dlt645Protocol().set_clock(reactor, self.endpoint, meter, 5.0)
        self.assertLess(abs(self.sim.now().timestamp() - reactor.seconds()), 1.0)
        self.assertEqual(self.sim.log, ["read 04000101", "read 04000102", "broadcast time",
                                        "read 04000101", "read 04000102"])
