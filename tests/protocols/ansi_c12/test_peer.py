"""A C12.18 client written by others against fep's simulated meter: termineter 1.0.6
(test-only; fep never imports it) logs on and reads tables from the simulator over loopback
TCP through pyserial's ``socket://`` URL handler, and over a socat pty pair. termineter
checks every packet CRC (NAKs and gives up after three bad ones), every read answer's count
and checksum, and parses ST0/ST1/ST3/ST5 itself; the clock (ST52) goes through its own
``format_ltime``. So these tests fail when the bytes fep's meter side sends are wrong.

termineter talks blocking pyserial, so it runs in a thread (deferToThread) while the
simulator runs on the reactor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.protocols.ansi_c12.c1219 import (
    ActualRegisters,
    GeneralConfig,
    decode_current_registers,
)
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter, serve_pty
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor

NOW = datetime(2024, 3, 1, 12, 0, 5, tzinfo=UTC)


def fixed_clock() -> float:
    return NOW.timestamp()


def termineter_session(
    url: str, password: str, tables: tuple[int, ...], packets: int = 4
) -> dict[str, Any]:
    """One termineter session (runs in a thread): start, log on, the general tables,
    raw reads of ``tables``, log off (termineter sends no terminate after a logoff)."""
    from c1218.connection import Connection
    from c1219.access.general import C1219GeneralAccess
    from c1219.data import format_ltime

    conn = Connection(url, c1218_settings={"pktsize": 128, "nbrpkts": packets}, enable_cache=False)
    conn.serial_h.timeout = 5  # a silent simulator makes termineter fail, not hang
    out: dict[str, Any] = {}
    try:
        out["started"] = conn.start()
        out["logged_in"] = conn.login(username="0000", userid=2, password=password)
        if not out["logged_in"]:
            return out
        general = C1219GeneralAccess(conn)
        out["general"] = {
            "manufacturer": general.manufacturer,
            "model": general.ed_model,
            "serial": general.mfg_serial_no,
            "device_id": general.device_id,
            "fw": (general.fw_version_no, general.fw_revision_no),
            "std_version": general.std_version_no,
            "nameplate": general.nameplate_type,
            "char_format": general.char_format,
            "tables_used": sorted(general.std_tbls_used),
            "ed_mode": general.ed_mode,
            "std_status": general.std_status,
        }
        raw = {table: bytes(conn.get_table_data(table)) for table in tables}
        out["tables"] = raw
        if 52 in raw:
            tm_format = raw[0][1] & 7 if 0 in raw else 2
            out["clock"] = format_ltime("<", tm_format, raw[52][:6])
        out["logged_off"] = conn.logoff()
    finally:
        conn.serial_h.close()
    return out


class TermineterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.meter = SimulatedC12Meter(clock=fixed_clock, password=b"secret")
        self.factory = C12MeterServerFactory(self.meter, reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"socket://127.0.0.1:{self.port.getHost().port}"

    def check_general(self, out: dict[str, Any]) -> None:
        self.assertTrue(out["started"])
        self.assertTrue(out["logged_in"])
        general = out["general"]
        self.assertEqual(general["manufacturer"], "FEP")
        self.assertEqual(general["model"], "C12SIM")
        self.assertEqual(general["serial"], "SIM0000001")
        self.assertEqual(general["device_id"], "FEP C12 SIMULATOR")
        self.assertEqual(general["fw"], (2, 3))
        self.assertEqual(general["std_version"], 1)
        self.assertEqual(general["nameplate"], "Electric")
        self.assertEqual(general["char_format"], "ISO/IEC 646 (7-bit)")
        # termineter skips bit 7 of each set byte, so it cannot see ST7, ST15, ST23, ST63,
        # ST71.
        self.assertEqual(
            general["tables_used"],
            [0, 1, 3, 5, 8, 11, 12, 13, 14, 16, 21, 22, 24, 25, 26, 51, 52, 53, 61, 62, 64, 74,
             76],
        )
        self.assertEqual((general["ed_mode"], general["std_status"]), (1, 0))

    @inlineCallbacks
    def test_termineter_logs_on_and_reads_st0_st1_st52_over_tcp(self) -> Any:
        out = yield deferToThread(termineter_session, self.url, "secret", (0, 1, 52, 21, 23))
        self.check_general(out)
        self.assertEqual(out["clock"], "MAR 1 2024 12:0:5")
        # ST52's TIME_DATE_QUAL after the six bytes: Friday (5) with the GMT flag (0x10).
        self.assertEqual(out["tables"][52][6], 0x15)
        config = GeneralConfig.decode(out["tables"][0])
        registers = ActualRegisters.decode(out["tables"][21])
        current = decode_current_registers(out["tables"][23], config, registers)
        self.assertEqual(current.total.summations[0], self.meter.register_values()[0])
        self.assertTrue(out["logged_off"])
        self.assertEqual(
            self.meter.log,
            ["identify", "negotiate", "logon", "security", "read 0", "read 1", "read 3",
             "read 5", "read 0", "read 1", "read 52", "read 21", "read 23", "logoff"],
        )  # fmt: skip
        # termineter asks for 9600 Bd and 128-byte packets; the meter agreed.
        assert self.meter.negotiated is not None
        self.assertEqual(
            (self.meter.negotiated.packet_size, self.meter.negotiated.baud), (128, 9600)
        )
        self.assertEqual(self.factory.naks_sent, 0)

    @inlineCallbacks
    def test_termineter_reads_a_multi_packet_table(self) -> Any:
        # 24-byte packets: ST23 (over 100 bytes) comes in several packets termineter joins.
        self.meter.max_packet_size = 24
        self.meter.max_packets = 16
        out = yield deferToThread(termineter_session, self.url, "secret", (0, 21, 23), 16)
        config = GeneralConfig.decode(out["tables"][0])
        registers = ActualRegisters.decode(out["tables"][21])
        self.assertGreater(len(out["tables"][23]), 24)
        current = decode_current_registers(out["tables"][23], config, registers)
        self.assertEqual(len(current.tiers), 2)

    @inlineCallbacks
    def test_termineter_is_refused_with_a_wrong_password(self) -> Any:
        out = yield deferToThread(termineter_session, self.url, "guess", ())
        self.assertTrue(out["started"])
        self.assertFalse(out["logged_in"])
        self.assertEqual(self.meter.log[-1], "security")
        self.assertFalse(self.meter.secured)

    @inlineCallbacks
    def test_damaged_answer_is_nakked_by_termineter_and_resent(self) -> Any:
        self.factory.damage_answers = 1
        out = yield deferToThread(termineter_session, self.url, "secret", (52,))
        self.assertEqual(out["clock"], "MAR 1 2024 12:0:5")
        self.assertEqual(self.factory.retransmissions, 1)


class TermineterPtyTests(unittest.TestCase):
    @inlineCallbacks
    def test_termineter_over_a_socat_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        meter = SimulatedC12Meter(clock=fixed_clock)
        sim_port = serve_pty(reactor, a, C12MeterServerFactory(meter, reactor))
        self.addCleanup(sim_port.loseConnection)
        out = yield deferToThread(termineter_session, b, "secret", (0, 52))
        self.assertTrue(out["logged_in"])
        self.assertEqual(out["general"]["serial"], "SIM0000001")
        self.assertEqual(out["clock"], "MAR 1 2024 12:0:5")


def termineter_logs(url: str) -> list[dict[str, Any]]:
    """termineter's own history-log reader (ST0, ST71, ST74) after a logon (in a thread)."""
    from c1218.connection import Connection
    from c1219.access.log import C1219LogAccess

    conn = Connection(url, c1218_settings={"pktsize": 256, "nbrpkts": 4}, enable_cache=False)
    conn.serial_h.timeout = 5
    try:
        assert conn.start() and conn.login(username="0000", userid=2, password="secret")
        logs: list[dict[str, Any]] = C1219LogAccess(conn).logs
        conn.logoff()
        return logs
    finally:
        conn.serial_h.close()


class TermineterLogTests(unittest.TestCase):
    @inlineCallbacks
    def test_termineter_reads_the_history_log(self) -> Any:
        meter = SimulatedC12Meter(clock=fixed_clock)
        port = reactor.listenTCP(0, C12MeterServerFactory(meter, reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        logs = yield deferToThread(termineter_logs, f"socket://127.0.0.1:{port.getHost().port}")
        # All eight entries as stored (termineter does not sort by the list header): five
        # events, then three unused ones.
        self.assertEqual(len(logs), 8)
        self.assertEqual([e["Procedure Number"] for e in logs], [1, 2, 4, 20, 7, 0, 0, 0])
        self.assertEqual([e["History Sequence Number"] for e in logs[:5]], [1, 2, 3, 4, 5])
        self.assertEqual([e["User ID"] for e in logs[:5]], [0, 0, 0, 0, 2])
        self.assertFalse(any(e["Std vs Mfg"] for e in logs))
        # Started 12:00:05: power down three hours before, demand reset an hour before.
        self.assertEqual(logs[0]["Time"], "MAR 1 2024 9:0:5")
        self.assertEqual(logs[3]["Time"], "MAR 1 2024 11:0:5")
        self.assertEqual(logs[1]["Arguments"], b"\x01\x00")


class ModuleFramework:
    """The part of termineter's framework its modules use: the connection and what the
    module prints."""

    def __init__(self, conn: Any) -> None:
        from types import SimpleNamespace

        self.serial_connection = conn
        self.directories = SimpleNamespace(data_path="", user_data="")
        self.said: list[tuple[str, str]] = []

    def print_status(self, text: str) -> None:
        self.said.append(("status", text))

    def print_good(self, text: str) -> None:
        self.said.append(("good", text))

    def print_error(self, text: str) -> None:
        self.said.append(("error", text))

    def print_exception(self, error: Exception) -> None:
        self.said.append(("exception", str(error)))

    def print_hexdump(self, data: bytes) -> None:
        self.said.append(("hexdump", bytes(data).hex()))


def termineter_module(
    url: str, password: str, module: str, options: dict[str, str],
    advanced: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one of termineter's own modules (``termineter.modules.<module>``) against the
    meter at ``url`` after a logon (in a thread); what it printed and ST8 afterwards."""
    import builtins
    import importlib

    from c1218.connection import Connection

    conn = Connection(url, c1218_settings={"pktsize": 128, "nbrpkts": 4}, enable_cache=False)
    conn.serial_h.timeout = 5
    try:
        assert conn.start() and conn.login(username="0000", userid=2, password=password)
        frmwk = ModuleFramework(conn)
        # Importing termineter's modules installs pluginbase's import hook in place of the
        # interpreter's __import__, process wide: put it back, or trial's worker cannot
        # load the test modules that come after this one.
        original_import = builtins.__import__
        try:
            instance = importlib.import_module(f"termineter.modules.{module}").Module(frmwk)
        finally:
            builtins.__import__ = original_import
        for name, value in options.items():
            instance.options.set_option_value(name, value)
        for name, value in (advanced or {}).items():
            instance.advanced_options.set_option_value(name, value)
        instance.run()
        st8 = bytes(conn.get_table_data(8))
        conn.logoff()
        return {"said": frmwk.said, "st8": st8}
    finally:
        conn.serial_h.close()


class TermineterProcedureTests(unittest.TestCase):
    """termineter's procedure and table-write modules against the simulated meter: the
    procedures the simulator runs are the ones C12.19 defines, as termineter writes them
    (ST7 with its own C1219ProcedureInit, ST8 read back and matched by procedure and
    sequence number)."""

    def setUp(self) -> None:
        self.meter = SimulatedC12Meter(password=b"secret", read_password=b"reader")
        port = reactor.listenTCP(0, C12MeterServerFactory(self.meter, reactor),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"socket://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def test_remote_reset_module_resets_demand_and_self_reads(self) -> Any:
        out = yield deferToThread(termineter_module, self.url, "secret", "remote_reset",
                                  {"DEMAND": "true", "SELF_READ": "true"})
        self.assertIn(("good", "Successfully Reset The Meter"), out["said"])
        self.assertEqual((self.meter.demand_resets, self.meter.demand_kw), (4, 0))
        self.assertEqual(len(self.meter.self_reads), 1)
        # ST8: SP9, termineter's sequence number, result 0 (completed).
        self.assertEqual((out["st8"][0], out["st8"][1], out["st8"][3]), (9, 0, 0))
        self.assertEqual(out["st8"][2], self.meter.initiated[2])

    @inlineCallbacks
    def test_run_procedure_module_sets_the_clock(self) -> Any:
        # SP10 parameters as C12.19 lays them out for TM_FORMAT 2 (UINT8): SET_MASK (time
        # and date), YY MM DD hh mm ss, TIME_DATE_QUAL (GMT, Sunday).
        params = "03" + bytes([24, 3, 3, 12, 0, 5]).hex() + "10"
        out = yield deferToThread(termineter_module, self.url, "secret", "run_procedure",
                                  {"PROC_NUMBER": "10", "PARAMS": params})
        self.assertIn(("status", "Received response from procedure: Procedure completed"),
                      out["said"])
        moved = (self.meter.now() - datetime(2024, 3, 3, 12, 0, 5, tzinfo=UTC)).total_seconds()
        self.assertTrue(0 <= moved < 5, moved)

    @inlineCallbacks
    def test_write_table_module_initiates_a_procedure_through_st7(self) -> Any:
        # A raw ST7 record: TBL_PROC_NBR 9 (little-endian, standard, selector 0),
        # SEQ_NBR 0x2A, ACTION_FLAG demand reset.
        out = yield deferToThread(termineter_module, self.url, "secret", "write_table",
                                  {"TABLE_ID": "7", "DATA": "09002a01"})
        self.assertIn(("status", "Successfully Wrote Data"), out["said"])
        self.assertIn(("status", "Table Write Verification Passed"), out["said"])
        self.assertEqual(out["st8"], bytes.fromhex("09002a00"))
        self.assertEqual(self.meter.demand_resets, 4)

    @inlineCallbacks
    def test_refusals_reach_termineter_as_result_codes(self) -> Any:
        out = yield deferToThread(termineter_module, self.url, "reader", "run_procedure",
                                  {"PROC_NUMBER": "9", "PARAMS": "01"})
        self.assertIn(("status", "Received response from procedure: No authorization for "
                       "requested procedure, procedure was ignored"), out["said"])
        self.assertEqual(self.meter.demand_resets, 3)
        out = yield deferToThread(termineter_module, self.url, "secret", "run_procedure",
                                  {"PROC_NUMBER": "30", "PARAMS": "00"})
        self.assertIn(("status", "Received response from procedure: Unrecognized procedure, "
                       "procedure was ignored"), out["said"])
        out = yield deferToThread(termineter_module, self.url, "secret", "run_procedure",
                                  {"PROC_NUMBER": "10", "PARAMS": "0018030300000000"})
        self.assertIn(("status", "Received response from procedure: Invalid parameter for "
                       "known procedure, procedure was ignored"), out["said"])
