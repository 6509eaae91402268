"""DL/T 698.45 written by others against fep: the ``dlt698`` package (1.0.1, Apache-2.0, a C++
DL/T 698.45 stack with Python bindings; test-only, fep never imports it).

Both ways: fep's ``Dlt698Protocol`` reads the package's server (its expert ``Engine`` with
an object registry: energy, voltages, the clock, a day-frozen record table) over TCP, as a
meter and as a terminal that logs in first, and over a socat pty pair; the package's client
reads fep's simulated meter (``fep.sim.dlt698``) over TCP and over a pty pair. The package
checks every frame (HCS, FCS, lengths, addresses) and every APDU it receives, so these tests
fail when the bytes either side of fep sends are wrong.

What the package does that fep follows: its server answers only client address 0 (CA) and
only after a CONNECT; a server started as a terminal (``remote_public``) refuses CONNECT
until its login is answered. Its server runs in its own thread (its Engine is polled by the
thread that made it); its blocking client runs in deferToThread.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.channels.serialport import SerialEndpoint, SerialSettings
from fep.model import Meter, ObisCode, Reading, Record
from fep.protocols.dlt698.client import DEFAULT_METER_TZ
from fep.protocols.dlt698.objects import DAY_SERIES
from fep.protocols.dlt698.session import Dlt698Protocol
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.system import require_module

reactor: Any = global_reactor

ADDRESS = "000000123456"
WIRE = bytes.fromhex(ADDRESS)[::-1]  # the package takes the address bytes in wire order
NOW = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC


def peer() -> Any:
    return require_module("dlt698", pip="dlt698")


class PeerServer:
    """The package's server in its own thread: energy (00100200), voltages (20000200), the
    clock (40000200) and a day-frozen table (50040200) of ``days`` rows."""

    def __init__(self, profile: str = "local_public", days: int = 6, *,
                 apdu_bytes: int | None = None, serial: str | None = None) -> None:  # fmt: skip
        self.d = peer()
        self.profile = profile
        self.days = days
        self.apdu_bytes = apdu_bytes
        self.serial = serial
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dlt698-peer", daemon=True)

    def start(self) -> PeerServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the dlt698 package's server did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _serve(self) -> None:
        d = self.d
        from dlt698 import _native as n
        from dlt698.expert import Engine, MemoryObject, MemoryRecords, ObjectRegistry
        from dlt698.expert import register_standard_object as register

        try:
            registry = ObjectRegistry()
            energy = MemoryObject()
            energy.set(2, d.Data.array([d.Data.uint32(v) for v in (123456, 50000, 40000,
                                                                     30000, 3456)]))
            register(registry, 0x0010, b"\x02", energy)
            volts = MemoryObject()
            volts.set(2, d.Data.array([d.Data.uint16(v) for v in (2201, 2195, 2210)]))
            register(registry, 0x2000, b"\x02", volts)
            clock = MemoryObject()
            clock.set(2, d.Data.date_time_s([7, 234, 11, 30, 8, 53, 20]))  # 2026-11-30 08:53:20
            register(registry, 0x4000, b"\x02", clock)
            columns = [d.Oad(oi=0x2023, attribute=2), d.Oad(oi=0x2021, attribute=2),
                       d.Oad(oi=0x0010, attribute=2)]  # fmt: skip
            frozen = MemoryRecords.create(0x5004, columns)
            frozen.replace_rows([
                [d.Data.uint32(day), d.Data.date_time_s([7, 234, 11, day, 0, 0, 0]),
                 d.Data.array([d.Data.uint32(100000 + day * 100)] * 5)]
                for day in range(1, self.days + 1)])  # fmt: skip
            register(registry, 0x5004, b"\x02", frozen)
            options = d.SessionOptions(server=n.ServerAddress(bytes=WIRE))
            if self.apdu_bytes is not None:
                parameters = n.AssociationParameters(apdu_bytes=self.apdu_bytes)
                parameters.protocol = d.SessionOptions().parameters.protocol
                options = d.SessionOptions(server=n.ServerAddress(bytes=WIRE),
                                           parameters=parameters, prefer_get_blocks=True)
            engine = Engine(options, registry)
            profile = getattr(d.ConnectionProfile, self.profile)
            if self.serial is not None:
                engine.open_serial(self.serial, n.SerialOptions(baud_rate=9600),
                                   n.SerialLinkOptions(), profile, n.Role.server)
            else:
                self.port = engine.listen("127.0.0.1", 0, profile)
        except BaseException as e:  # reported by start()
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                engine.poll(0.005)
        finally:
            engine.close()


def meter(**metadata: str) -> Meter:
    return Meter(id="peer", protocol="dlt698", route="tcp:127.0.0.1", address=ADDRESS,
                 metadata=metadata)


def by_id(records: list[Record]) -> dict[str, Reading]:
    return {r.native_id or "": r for r in records if isinstance(r, Reading)}


class FepReadsPeerServerTests(unittest.TestCase):
    def server(self, **kw: Any) -> TCP4ClientEndpoint:
        server = PeerServer(**kw).start()
        self.addCleanup(server.stop)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)

    def check(self, records: list[Record]) -> None:
        got = by_id(records)
        self.assertEqual((got["00100201"].value, got["00100201"].unit_text),
                         (Decimal("1234.56"), "kWh"))
        self.assertEqual(got["00100205"].value, Decimal("34.56"))
        self.assertEqual((got["20000202"].value, got["20000202"].unit_text),
                         (Decimal("219.5"), "V"))
        self.assertEqual(got["40000200"].meter_time, datetime(2026, 11, 30, 0, 53, 20,
                                                              tzinfo=UTC))

    @inlineCallbacks
    def test_fep_reads_energy_voltage_clock_and_a_frozen_record_over_tcp(self) -> Any:
        endpoint = self.server()
        records = yield Dlt698Protocol().read(reactor, endpoint, meter(
            dlt698_items="00100200,20000200,40000200", dlt698_frozen="50040200",
            dlt698_frozen_columns="20210200,00100200", dlt698_frozen_last="2"), 5.0)
        self.check(records)
        frozen = [r for r in records if isinstance(r, Reading)
                  and r.native_id == "50040200/00100201"]  # fmt: skip
        # The last and the one before: 6 and 5 November... of the table's rows, 00:00 UTC+8.
        self.assertEqual([(r.value, r.meter_time) for r in frozen], [
            (Decimal("1006.00"), datetime(2026, 11, 6, tzinfo=DEFAULT_METER_TZ)),
            (Decimal("1005.00"), datetime(2026, 11, 5, tzinfo=DEFAULT_METER_TZ)),
        ])

    @inlineCallbacks
    def test_the_peer_server_leaves_a_secured_get_unanswered(self) -> Any:
        # dlt698 1.0.1's server has no security service: a GET in a SECURITY-Request
        # (plaintext + RN) gets no answer, so fep's secured reads are tested against fep's
        # simulator, and the SECURITY bytes against the package's codec.
        from fep.errors import SessionTimeout

        endpoint = self.server()
        with self.assertRaises(SessionTimeout):
            yield Dlt698Protocol().read(reactor, endpoint, meter(
                dlt698_items="00100200", dlt698_security="plaintext-rn", dlt698_retries="0"),
                1.0)

    @inlineCallbacks
    def test_fep_answers_a_terminal_login_then_reads(self) -> Any:
        endpoint = self.server(profile="remote_public")
        records = yield Dlt698Protocol().read(reactor, endpoint, meter(
            dlt698_items="00100200,20000200,40000200"), 5.0)
        self.check(records)

    @inlineCallbacks
    def test_fep_reads_a_frozen_range_the_peer_sends_in_get_next_blocks(self) -> Any:
        # A 128-byte APDU limit: the package answers the 20 rows in GET-Response-Next blocks.
        endpoint = self.server(days=20, apdu_bytes=128)
        start = datetime(2026, 11, 3, tzinfo=DEFAULT_METER_TZ)
        records = yield Dlt698Protocol().read_profile(
            reactor, endpoint, meter(dlt698_profile="50040200", dlt698_profile_columns="00100200",
                                     dlt698_profile_period="1440"),
            start - timedelta(days=1), start + timedelta(days=14), 5.0)  # fmt: skip
        # The package projects whole attributes only (00100200, not its element 00100201):
        # of each element one block a day (the day-frozen series, OBIS F 1), 15 days.
        self.assertEqual(len(records), 5 * 15)
        total = sorted((b for b in records if b.obis == ObisCode(1, 0, 1, 8, 0, DAY_SERIES)),
                       key=lambda b: b.start)
        self.assertEqual([b.period for b in total], [timedelta(days=1)] * 15)
        self.assertEqual([b.values for b in total],
                         [(Decimal(1000 + day),) for day in range(3, 18)])
        self.assertEqual(total[0].start, start - timedelta(days=1))

    @inlineCallbacks
    def test_fep_reads_the_peer_clock(self) -> Any:
        endpoint = self.server()
        when = yield Dlt698Protocol().read_clock(reactor, endpoint, meter(), 5.0)
        self.assertEqual(when, datetime(2026, 11, 30, 0, 53, 20, tzinfo=UTC))

    @inlineCallbacks
    def test_fep_reads_the_peer_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        server = PeerServer(serial=a).start()
        self.addCleanup(server.stop)
        endpoint = SerialEndpoint(reactor, SerialSettings(b, baudrate=9600, parity="E"))
        records = yield Dlt698Protocol().read(reactor, endpoint, meter(
            dlt698_items="00100200,20000200,40000200"), 5.0)
        self.check(records)


class PeerClientReadsFepMeterTests(unittest.TestCase):
    def client(self, profile: str = "local_public") -> Any:
        d = peer()
        from dlt698 import _native as n

        options = d.ClientOptions(protocol=d.SessionOptions(
            server=n.ServerAddress(bytes=WIRE), request_timeout=3.0))  # fmt: skip
        return d.Client(options), getattr(d.ConnectionProfile, profile)

    def serve(self, login: bool = False) -> tuple[SimulatedDlt698Meter, int]:
        sim = SimulatedDlt698Meter(ADDRESS, clock=lambda: NOW)
        port = reactor.listenTCP(0, Dlt698MeterFactory([sim], reactor, login=login),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return sim, port.getHost().port

    def reads(self, client: Any, connect: Any) -> dict[str, Any]:
        """What the package's client reads (runs in a thread)."""
        d = peer()
        from dlt698 import _native as n

        out: dict[str, Any] = {}
        with client:
            connect()
            energy = client.get(d.Oad(oi=0x0010, attribute=2)).require_data()
            out["energy"] = [e.as_uint32() for e in energy.value]
            listed = client.get_list([d.Oad(oi=0x2000, attribute=2),
                                      d.Oad(oi=0x4000, attribute=2)])  # fmt: skip
            out["list"] = listed
            query = n.make_record_query(0x5004, n.Selector9(previous=1),
                                        [d.Oad(oi=0x2021, attribute=2),
                                         d.Oad(oi=0x0010, attribute=2, index=1)])  # fmt: skip
            out["record"] = client.get_record(query)
            out["frequency"] = client.get(d.Oad(oi=0x200F, attribute=2)).require_data().as_uint16()
            out["missing"] = client.get(d.Oad(oi=0x2017, attribute=2)).dar
        return out

    def check(self, out: dict[str, Any], sim: SimulatedDlt698Meter) -> None:
        self.assertEqual(out["energy"], [sim.energy_raw(NOW, t) for t in range(5)])
        voltages, clock = (a.result for a in out["list"].attributes)
        self.assertEqual([v.as_uint16() for v in voltages.value], [2201, 2195, 2210])
        self.assertEqual(list(clock.as_date_time_s()), [7, 234, 11, 30, 8, 53, 20])
        record = out["record"]
        (row,) = record.result
        midnight = datetime(2026, 11, 30, tzinfo=DEFAULT_METER_TZ)
        self.assertEqual(list(row[0].as_date_time_s()), [7, 234, 11, 30, 0, 0, 0])
        self.assertEqual(row[1].as_uint32(), sim.energy_raw(midnight.timestamp()))
        self.assertEqual(out["frequency"], 5002)
        self.assertEqual(out["missing"], 4)  # object undefined

    @inlineCallbacks
    def test_peer_client_reads_the_simulated_meter_over_tcp(self) -> Any:
        sim, port = self.serve()
        client, profile = self.client()
        out = yield deferToThread(self.reads, client,
                                  lambda: client.connect_tcp("127.0.0.1", port, profile))
        self.check(out, sim)
        self.assertEqual(sim.log[0], "connect")

    @inlineCallbacks
    def test_peer_client_takes_the_simulated_terminals_login(self) -> Any:
        sim, port = self.serve(login=True)
        client, profile = self.client("remote_public")
        out = yield deferToThread(self.reads, client,
                                  lambda: client.connect_tcp("127.0.0.1", port, profile))
        self.check(out, sim)
        self.assertIn("LinkResponse", sim.log)

    @inlineCallbacks
    def test_peer_client_reads_the_simulated_meter_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        sim = SimulatedDlt698Meter(ADDRESS, clock=lambda: NOW)
        port = serve_pty(reactor, a, Dlt698MeterFactory([sim], reactor))
        self.addCleanup(port.loseConnection)
        client, profile = self.client()
        out = yield deferToThread(self.reads, client, lambda: client.open_serial(b, 9600, profile))
        self.check(out, sim)
