"""``parameter-set NAME=VALUE`` on pulse recorders: the device map's ``[parameter.NAME]``
sections (counter presets in holding registers, counter resets as coils), the values checked
against them before anything is sent, the writes they make, and the simulated recorder taking
them."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.errors import ConfigError, NotSupported
from fep.model import Meter
from fep.protocols.modbus.devicemap import Register, Table, load_device_map, parse_device_map
from fep.protocols.modbus.pdu import (
    BitsResponse,
    ExceptionResponse,
    Function,
    ReadRequest,
    Request,
    Response,
    WriteRegistersRequest,
    WriteResponse,
    write_coil,
)
from fep.protocols.modbus.recorder import parameter_values, write_parameters
from fep.protocols.modbus.session import PulseRecorderProtocol
from fep.protocols.registry import protocol_commands
from fep.sim.pulse_recorder import EVENT_CODES, FLAG_RESTART, PulseRecorder
from tests.protocols.modbus.drive import drive

SIM = load_device_map("sim-pr2")
DAY = datetime(2024, 3, 1, tzinfo=UTC).timestamp()

MAP = """
[device]
model = test
word_order = little
[counter.1]
table = holding
address = 100
width = 16
"""


class DeviceMapParameterTests(unittest.TestCase):
    def test_the_simulators_map_names_presets_and_resets(self) -> None:
        p = SIM.parameters
        self.assertEqual(sorted(p), ["counter1", "counter1_reset", "counter2",
                                     "counter2_reset"])
        self.assertEqual(p["counter2"].register, Register(Table.HOLDING, 22, "u32"))
        self.assertEqual((p["counter2"].lo, p["counter2"].hi), (0, 0xFFFFFFFF))
        self.assertEqual(p["counter1_reset"].register, Register(Table.COILS, 0))
        self.assertEqual(SIM.event_codes[11].name, "counter-reset")

    def test_min_and_max_narrow_the_type_range(self) -> None:
        m = parse_device_map(MAP + "[parameter.Preset1]\ntable = holding\naddress = 100\n"
                             "min = 10\nmax = 60000\n")
        self.assertEqual((m.parameters["preset1"].lo, m.parameters["preset1"].hi),
                         (10, 60000))

    def test_a_parameter_in_input_registers_is_an_error_naming_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_device_map(MAP + "[parameter.x]\ntable = input\naddress = 1\n", file="m.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("m.ini", "parameter.x", "table"))

    def test_an_unknown_key_in_a_parameter_section_is_an_error(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_device_map(MAP + "[parameter.x]\ntable = coils\naddress = 1\nmin = 0\n")
        self.assertEqual(caught.exception.key, "min")


class ParameterValueTests(unittest.TestCase):
    def test_presets_and_resets_from_name_value_pairs(self) -> None:
        pairs = parameter_values("r1", SIM, {"counter1": "0x10", "Counter2_Reset": "on",
                                             "attempts": 3, "retry_delay": 30.0,
                                             "progress": {}})
        self.assertEqual([(p.name, v) for p, v in pairs], [("counter1", 16),
                                                           ("counter2_reset", 1)])

    def test_a_name_not_in_the_map_is_refused_naming_meter_command_and_parameter(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parameter_values("r1", SIM, {"counter1": "1", "counter3": "0"})
        self.assertEqual(str(caught.exception),
                         "meter r1: parameter-set counter3: device map sim-pr2 has no "
                         "parameter 'counter3' (its parameters: counter1, counter1_reset, "
                         "counter2, counter2_reset)")

    def test_values_out_of_range_or_not_numbers_are_refused(self) -> None:
        m = parse_device_map(MAP + "[parameter.preset1]\ntable = holding\naddress = 100\n"
                             "max = 9999\n", name="t")
        for params, why in (({"preset1": "10000"}, "10000 is out of 0..9999"),
                            ({"preset1": "-1"}, "-1 is out of 0..9999"),
                            ({"preset1": "ten"}, "'ten' is not a whole number")):
            with self.assertRaises(ConfigError) as caught:
                parameter_values("r1", m, params)
            self.assertIn(f"meter r1: parameter-set preset1: {why}", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parameter_values("r1", SIM, {"counter1_reset": "maybe"})
        self.assertIn("'maybe' is not on or off", str(caught.exception))

    def test_no_parameter_given_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parameter_values("r1", SIM, {"attempts": 3})
        self.assertIn("meter r1: parameter-set names no parameter", str(caught.exception))


class WriteTests(unittest.TestCase):
    def test_holding_registers_by_function_16_in_the_maps_word_order_coils_by_5(self) -> None:
        m = parse_device_map(MAP + "[parameter.big]\ntable = holding\naddress = 200\n"
                             "type = u32\n[parameter.reset]\ntable = coils\naddress = 3\n")
        sent: list[Request] = []

        def answer(request: Request) -> Response:
            return WriteResponse(request.function, request.address, 1)

        pairs = parameter_values("r1", m, {"big": str(0x12345678), "reset": "yes"})
        done = drive(write_parameters(m, pairs), answer, sent)
        self.assertEqual(done, {"big": 0x12345678, "reset": 1})
        self.assertEqual(sent, [WriteRegistersRequest(200, (0x5678, 0x1234)),  # little
                                write_coil(3, True)])
        self.assertEqual(sent[0].encode().hex(), "1000c80002045678" "1234")

    def test_the_protocol_refuses_before_connecting(self) -> None:
        # A command recorded before its meter's map lost the parameter: refused at run time
        # too, with nothing sent.
        connects: list[object] = []

        class Endpoint:
            def connect(self, factory: object) -> object:
                connects.append(factory)
                raise AssertionError("connected")

        meter = Meter("r1", "modbus-pulse", "tcp:host=127.0.0.1:port=1",
                      metadata={"modbus_device_map": "generic-counter16"})
        protocol = PulseRecorderProtocol()
        for command, params, error in (
                ("parameter-set", {"counter1_reset": "on"}, ConfigError),
                ("disconnect", {}, NotSupported)):
            d = protocol.run_command(MemoryReactorClock(), Endpoint(), meter, command, params,
                                     1.0, lambda _: None)
            failure = self.failureResultOf(d, error)
            self.assertIn(f"meter r1: {command}", str(failure.value))
        self.assertEqual(connects, [])
        with self.assertRaises(ConfigError):
            PulseRecorderProtocol.check_command(meter, "parameter-set", {"counter3": "0"})
        PulseRecorderProtocol.check_command(meter, "time-set", {})

    def test_the_protocol_declares_parameter_set_and_the_clock_commands(self) -> None:
        for name in ("modbus-pulse", "modbus"):
            self.assertEqual(protocol_commands(name),
                             {"parameter-set", "time-set", "time-sync"})


class SimulatedRecorderTests(unittest.TestCase):
    def recorder(self) -> PulseRecorder:
        rec = PulseRecorder(clock=lambda: DAY + 3600, started=DAY)
        rec.advance()
        return rec

    def test_a_preset_sets_the_counter_and_logs_a_counter_reset(self) -> None:
        rec = self.recorder()
        self.assertEqual(rec.inputs[0].counter, 2400)
        answer = rec.answer(WriteRegistersRequest(20, (0x0001, 0x0002)))
        self.assertEqual(answer, WriteResponse(Function.WRITE_MULTIPLE_REGISTERS, 20, 2))
        self.assertEqual(rec.inputs[0].counter, 0x10002)
        read = rec.answer(ReadRequest(Function.READ_HOLDING_REGISTERS, 20, 4))
        self.assertEqual(read.registers, (1, 2, 0, 600))  # type: ignore[union-attr]
        self.assertEqual(rec.events[-1].code, EVENT_CODES["counter-reset"])

    def test_a_reset_coil_zeroes_the_counter_and_flags_the_next_record(self) -> None:
        rec = self.recorder()
        answer = rec.answer(write_coil(1, True))
        self.assertEqual(answer, WriteResponse(Function.WRITE_SINGLE_COIL, 1, 0xFF00))
        self.assertEqual(rec.inputs[1].counter, 0)
        self.assertEqual(rec.answer(ReadRequest(Function.READ_COILS, 0, 2)),
                         BitsResponse(Function.READ_COILS, (False, False)))
        rec.clock = lambda: DAY + 3600 + 900
        rec.advance()
        self.assertEqual(rec.history[-1].flags & FLAG_RESTART, FLAG_RESTART)
        self.assertEqual(rec.history[-1].counters[1], 150)  # counted since the reset

    def test_half_a_counter_or_an_unknown_coil_is_refused(self) -> None:
        rec = self.recorder()
        self.assertEqual(rec.answer(WriteRegistersRequest(21, (5,))),
                         ExceptionResponse(Function.WRITE_MULTIPLE_REGISTERS, 3))
        self.assertEqual(rec.answer(write_coil(7, True)),
                         ExceptionResponse(Function.WRITE_SINGLE_COIL, 2))
        self.assertEqual(rec.inputs[0].counter, 2400)
