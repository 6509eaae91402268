"""Load analysis (fep.analysis.load, jobs.run_load, `fep load`) with hand-worked figures.

A meter M, 15-minute intervals on Tuesday 1 December 2026: 100 Wh each, 500 Wh at 18:00 and
20 Wh at 03:00. Energy 94 x 100 + 500 + 20 = 9920 Wh; demand is energy x 4 (per hour):
peak 2000 W at 18:00, base 80 W, average 9920 / 24 = 413.333 W, load factor
413.333 / 2000 = 20.67 %.

The transformer area T1 (capacity 1.5 kVA): its summary meter S measures 250 Wh each interval
(1000 W = 1 kW, 66.67 % of 1.5 kVA) and 450 Wh at 18:00 and 18:15 (1800 W: 1.8 / 1.5 =
120.00 %, two intervals = 30 minutes overloaded). Energy 94 x 250 + 2 x 450 = 24400 Wh,
average 1016.667 W, load factor 1016.667 / 1800 = 56.48 %. With a power factor of 0.9 the
peak is 1.8 / 0.9 = 2 kVA: 133.33 %.

Its members: A on phase A 100 Wh each interval, B on phase B 60 Wh (240 Wh at 12:00), C
three-phase 90 Wh (30 on each phase). Each interval A 130, B 90, C 30 Wh: mean 83.333, the
largest deviation C's 53.333: 64.00 %; at 12:00 A 130, B 270, C 30: mean 143.333, B's
deviation 126.667: 88.37 %, the day's highest. The day's energies: A 130 x 96 = 12480,
B 90 x 96 + 180 = 8820, C 30 x 96 = 2880: mean 8060, C's deviation 5180: 64.27 %.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.areas import Direction
from fep.analysis.load import area_series, day_load, imbalance, phase_series, typical_day
from fep.analysis.series import Point, grid
from fep.analysis.settings import VeeSettings, parse
from fep.analysis.store import AnalysisStore
from fep.errors import ConfigError
from fep.model import IntervalBlock, ObisCode
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main
from tests.postgres import fresh_database

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
STARTS = grid(DAY, DAY + timedelta(days=1), Q15)
AT = {"03:00": 12, "12:00": 48, "18:00": 72, "18:15": 73}

AREAS = """area,name,kind,parent,meter,role,direction,phase,capacity
F1,Feeder 1,feeder,,,,,,
T1,Transformer 1,transformer,F1,,,,,1.5
T1,,,,S,summary,in,,
T1,,,,A,member,,A,
T1,,,,B,member,,B,
T1,,,,C,member,,ABC,
"""


def values(base: int, at: dict[str, int] | None = None) -> list[D]:
    """96 intervals of ``base`` Wh, with ``at``'s values at their times of day."""
    out = [D(base)] * 96
    for when, value in (at or {}).items():
        out[AT[when]] = D(value)
    return out


def series(vals: list[D], first: datetime = DAY) -> dict[datetime, Point]:
    return {first + n * Q15: Point(first + n * Q15, v) for n, v in enumerate(vals)}


METER = values(100, {"18:00": 500, "03:00": 20})
S = values(250, {"18:00": 450, "18:15": 450})
A, B, C = values(100), values(60, {"12:00": 240}), values(90)


class DayLoadTests(unittest.TestCase):
    def test_a_meters_day(self) -> None:
        d = day_load("M", "meter", DAY.date(), STARTS, Q15, series(METER))
        self.assertEqual((d.intervals, d.energy, d.peak, d.peak_time, d.base, d.average,
                          d.load_factor),
                         (96, D(9920), D(2000), DAY + timedelta(hours=18), D(80),
                          D("413.333"), D("20.67")))
        self.assertIsNone(d.loading)

    def test_missing_intervals_leave_the_average_of_those_present(self) -> None:
        """Half the day at 100 Wh: average 400 W over 12 hours, load factor 100 %."""
        half = {t: p for t, p in series(values(100)).items() if t < DAY + timedelta(hours=12)}
        d = day_load("M", "meter", DAY.date(), STARTS, Q15, half)
        self.assertEqual((d.intervals, d.energy, d.average, d.load_factor),
                         (48, D(4800), D(400), D(100)))
        empty = day_load("M", "meter", DAY.date(), STARTS, Q15, {})
        self.assertEqual((empty.intervals, empty.peak, empty.load_factor), (0, None, None))

    def test_transformer_loading_and_phase_imbalance(self) -> None:
        members = {"A": series(A), "B": series(B), "C": series(C)}
        load = area_series(STARTS, {"S": (Direction.IN, series(S))}, members)
        phases = phase_series(STARTS, {"A": ("A", members["A"]), "B": ("B", members["B"]),
                                       "C": ("ABC", members["C"])})
        d = day_load("T1", "area", DAY.date(), STARTS, Q15, load, capacity=D("1.5"),
                     phases=phases)
        self.assertEqual((d.energy, d.peak, d.peak_time, d.base, d.average, d.load_factor),
                         (D(24400), D(1800), DAY + timedelta(hours=18), D(1000),
                          D("1016.667"), D("56.48")))
        self.assertEqual((d.loading, d.overload_minutes), (D("120.00"), 30))
        self.assertEqual((d.phase_a, d.phase_b, d.phase_c), (D(12480), D(8820), D(2880)))
        self.assertEqual((d.imbalance, d.imbalance_peak, d.imbalance_time),
                         (D("64.27"), D("88.37"), DAY + timedelta(hours=12)))
        pf = day_load("T1", "area", DAY.date(), STARTS, Q15, load, capacity=D("1.5"),
                      power_factor=D("0.9"))
        self.assertEqual((pf.loading, pf.overload_minutes), (D("133.33"), 30))

    def test_an_area_without_summary_meters_is_its_members_sum(self) -> None:
        load = area_series(STARTS, {}, {"A": series(A), "B": series(B)})
        self.assertEqual(load[DAY].value, D(160))
        self.assertEqual(load[DAY + 12 * 4 * Q15].value, D(340))
        out = area_series(STARTS, {"S": (Direction.IN, {}), "O": (Direction.OUT, {})},
                          {"A": series(A)})
        self.assertEqual(out, {})

    def test_imbalance(self) -> None:
        self.assertEqual(imbalance([D(100), D(100), D(100)]), D(0))
        self.assertEqual(imbalance([D(120), D(90), D(90)]), D(20))
        self.assertIsNone(imbalance([D(0), D(0), D(0)]))

    def test_typical_day(self) -> None:
        """Tuesday and Wednesday 100 and 200 Wh at 00:00 (400 and 800 W): 600 W over 2
        working days; Saturday 50 Wh: 200 W."""
        sat = datetime(2026, 12, 5, tzinfo=UTC)
        points = {DAY: Point(DAY, D(100)), DAY + timedelta(days=1): Point(
            DAY + timedelta(days=1), D(200)), sat: Point(sat, D(50))}
        self.assertEqual([p.as_dict() for p in typical_day("M", points, Q15)], [
            {"subject": "M", "days": "weekday", "time": "00:00", "demand": D(600), "count": 2},
            {"subject": "M", "days": "weekend", "time": "00:00", "demand": D(200),
             "count": 1}])


class CapacityImportTests(unittest.TestCase):
    def test_capacity_is_read_and_written_back(self) -> None:
        network = areas.read_csv(AREAS)
        self.assertEqual(network.area("T1").capacity, D("1.5"))  # type: ignore[union-attr]
        self.assertIsNone(network.area("F1").capacity)  # type: ignore[union-attr]
        text = areas.write_csv(network)
        self.assertEqual(text.splitlines()[0], "area,name,kind,parent,meter,role,direction,"
                         "phase,capacity")
        self.assertEqual(areas.read_csv(text), network)

    def test_a_bad_capacity_names_the_line_and_column(self) -> None:
        with self.assertRaisesRegex(ConfigError, "line 3: capacity '-2'") as e:
            areas.read_csv(AREAS.replace(",1.5", ",-2"), "a.csv")
        self.assertEqual((e.exception.file, e.exception.key), ("a.csv", "capacity"))

    def test_the_load_section_of_vee_ini(self) -> None:
        s = parse("[load]\nunit = kWh\npower_factor = 0.9\n")
        self.assertEqual((s.load_kw, s.power_factor), (D(1), D("0.9")))
        self.assertEqual((VeeSettings().load_kw, VeeSettings().power_factor),
                         (D("0.001"), D(1)))
        with self.assertRaisesRegex(ConfigError, "power factor"):
            parse("[load]\npower_factor = 1.2\n")


def blocks() -> list[IntervalBlock]:
    return [IntervalBlock(m, CHANNEL, DAY, Q15, tuple(v))
            for m, v in (("M", METER), ("S", S), ("A", A), ("B", B), ("C", C))]


class LoadStoreBehaviours:
    """run_load through the store: the area's capacity kept, the day's figures as above."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def test_run_load(self) -> None:
        store = self.new_store()
        await store.open()
        try:
            await store.write(blocks())
            analysis = AnalysisStore(store)
            await analysis.save_network(areas.read_csv(AREAS))
            network = await analysis.network()
            self.assertEqual(network.area("T1").capacity, D("1.5"))  # type: ignore
            report = await jobs.run_load(store, VeeSettings(), date(2026, 12, 1), area="F1")
            meter = await jobs.run_load(store, VeeSettings(), date(2026, 12, 1), meter="M",
                                        profile=True)
        finally:
            await store.close()
        by = {d.subject: d for d in report.days}
        t1 = by["T1"]
        self.assertEqual((t1.energy, t1.peak, t1.loading, t1.overload_minutes, t1.imbalance),
                         (D(24400), D(1800), D("120.00"), 30, D("64.27")))
        # F1 has no meter of its own: nothing to add up.
        self.assertEqual((by["F1"].intervals, by["F1"].energy), (0, D(0)))
        m = meter.days[0]
        self.assertEqual((m.peak, m.load_factor), (D(2000), D("20.67")))
        self.assertEqual(len(meter.profile), 96)
        self.assertEqual(meter.profile[72].as_dict()["demand"], D(2000))


class SqliteLoadTests(LoadStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresLoadTests(LoadStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


class LoadCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        await store.write(blocks())
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text(AREAS, encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(csv))
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_fep_load(self) -> None:
        result = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--area", "T1",
                          "--format", "csv")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), [
            "subject,kind,day,intervals,energy,peak,peak_time,base,average,load_factor,"
            "capacity,loading,overload_minutes,phase_a,phase_b,phase_c,imbalance,"
            "imbalance_peak,imbalance_time,imbalance_source,imbalance_network,"
            "voltage_minutes,over_voltage_minutes,under_voltage_minutes,over_voltage_a,"
            "over_voltage_b,over_voltage_c,under_voltage_a,under_voltage_b,under_voltage_c,"
            "voltage_max,voltage_max_time,voltage_min,voltage_min_time,voltage_within",
            "T1,area,2026-12-01,96,24400,1800.000,2026-12-01T18:00:00Z,1000.000,1016.667,"
            "56.48,1.5,120.00,30,12480,8820,2880,64.27,88.37,2026-12-01T12:00:00Z,network"
            + "," * 15])
        meter = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--to",
                         "2026-12-02", "--meter", "M", "--format", "json")
        self.assertEqual(meter.returncode, 0, meter.stderr)
        self.assertIn('"load_factor": 20.67,', meter.stdout)
        members = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--area", "T1",
                           "--members", "--format", "csv").stdout.splitlines()
        self.assertEqual([line.split(",")[:5] for line in members[1:]], [
            ["T1", "area", "2026-12-01", "96", "24400"],
            ["A", "meter", "2026-12-01", "96", "9600"],
            ["B", "meter", "2026-12-01", "96", "5940"],
            ["C", "meter", "2026-12-01", "96", "8640"]])
        profile = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--meter", "M",
                           "--profile", "--format", "csv")
        self.assertIn("M,weekday,18:00,2000.000,1", profile.stdout.splitlines())

    def test_errors(self) -> None:
        for args, text in ((("--area", "T9"), "no area 'T9'"),
                           (("--area", "T1", "--meter", "M"), "not both"),
                           (("--to", "2026-11-30"), "is empty")):
            result = fep_main("--db", self.db, "load", "--from", "2026-12-01", *args)
            self.assertEqual(result.returncode, 2, args)
            self.assertIn(text, result.stderr)
