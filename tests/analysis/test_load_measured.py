"""Load analysis from what the meters measure per phase (fep.analysis.load: day_voltage,
measured_imbalance; jobs.run_load; `fep load`, the API and the console), hand-worked.

Voltage of meter V on Tuesday 1 December 2026, 10-minute intervals (144 a phase), limits
230 V +-10 % (207 to 253 V): L1 230 V, 254.0 V at 18:00 and 18:10; L2 230 V, 205.5 V at
18:10, 18:20 and 18:30; L3 230 V, 253.0 V at 12:00 (at the limit: within) and 206.9 V at
03:00. Over: L1 20 minutes (18:00-18:20), the day 20. Under: L2 30 and L3 10 minutes, the
day 40 (03:00-03:10 and 18:10-18:40). Highest 254.0 V at 18:00, lowest 205.5 V at 18:10.
Within: L1 1420 / 1440 = 98.61 %, L2 1410 / 1440 = 97.92 %, L3 1430 / 1440 = 99.31 %: the
lowest phase's 97.92 %. Through the store its L1 also has 100 V at 05:00 marked not valid by
the meter (left out: L1 measured 1430 minutes, 1410 / 1430 = 98.60 %; the lowest still
L2's 97.92 %), and its L3 is stored in kV (0.230, scaler 3).

Phase currents of meter P, 15-minute intervals: L1 10 A, L2 10 A, L3 7 A, 1 A at 12:00 and
12:15. Each interval: mean 9, L3's deviation 2: 22.22 %; at 12:00: 10, 10, 1, mean 7, L3's
deviation 6: 85.71 %, the highest. The day's means 10, 10 and (94 x 7 + 2) / 96 = 6.875:
mean 8.958, L3's deviation 2.083: 23.26 %. P also measures active power (1000 W a phase):
the currents are preferred. Meter Q measures active power only, 1000, 1000 and 700 W: mean
900, deviation 200: 22.22 % each interval and for the day.

Area T1 (tests.analysis.test_load): its summary meter S measures the currents of P: the
area's imbalance 23.26 % (``current``), next to the estimate from its members' place, 64.27 %
(``imbalance_network``). Its voltage, of every meter of it: member A (phase A) L1 10-minute,
254 V at 18:00 and 18:10; member B (single-phase, on phase B: its L1 is the area's B)
15-minute, 205 V at 18:00; member C (three-phase) 10-minute, its L2 200 V at 18:10. Phase A
over 20 minutes; phase B under 18:00-18:15 and 18:10-18:20: 20 minutes; highest 254 V at
18:00, lowest 200 V at 18:10; within A and B 1420 / 1440 = 98.61 %, C 100 %: 98.61 %.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.load import (
    DayLoad,
    Sample,
    VoltageLimits,
    day_voltage,
    measured_imbalance,
    phase_of,
    phase_values,
    summed_phases,
)
from fep.analysis.settings import VeeSettings, parse
from fep.analysis.store import AnalysisStore
from fep.errors import ConfigError
from fep.model import IntervalBlock, ObisCode, Quality, Unit
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.analysis.test_load import AREAS, DAY, Q15, blocks
from tests.inprocess import fep_main
from tests.postgres import fresh_database

Q10 = timedelta(minutes=10)
END = DAY + timedelta(days=1)
VOLT = Unit.by_code(35)
L1V, L2V, L3V = (ObisCode.parse(f"1-0:{c}.7.0") for c in (32, 52, 72))
L1I, L2I, L3I = (ObisCode.parse(f"1-0:{c}.7.0") for c in (31, 51, 71))
L1P, L2P, L3P = (ObisCode.parse(f"1-0:{c}.7.0") for c in (21, 41, 61))


def at(hhmm: str, period: timedelta) -> int:
    """The index of the interval starting at ``hhmm`` in a day of ``period``."""
    h, m = hhmm.split(":")
    return int(timedelta(hours=int(h), minutes=int(m)) / period)


def day_of(base: str, period: timedelta, changes: dict[str, str] | None = None) -> list[D]:
    out = [D(base)] * int(timedelta(days=1) / period)
    for hhmm, value in (changes or {}).items():
        out[at(hhmm, period)] = D(value)
    return out


def samples(values: list[D], period: timedelta) -> list[Sample]:
    return [Sample(DAY + n * period, period, v) for n, v in enumerate(values)]


V1 = day_of("230", Q10, {"18:00": "254.0", "18:10": "254.0"})
V2 = day_of("230", Q10, {"18:10": "205.5", "18:20": "205.5", "18:30": "205.5"})
V3 = day_of("230", Q10, {"12:00": "253.0", "03:00": "206.9"})
I1, I2 = day_of("10", Q15), day_of("10", Q15)
I3 = day_of("7", Q15, {"12:00": "1", "12:15": "1"})


class VoltageTests(unittest.TestCase):
    def test_minutes_over_and_under_per_phase_and_in_all(self) -> None:
        v = day_voltage({"A": samples(V1, Q10), "B": samples(V2, Q10),
                         "C": samples(V3, Q10)}, DAY, END)
        assert v is not None
        self.assertEqual((v.minutes, v.over_minutes, v.under_minutes, v.over, v.under),
                         (1440, 20, 40, (20, 0, 0), (0, 30, 10)))
        self.assertEqual((v.highest, v.highest_time, v.lowest, v.lowest_time),
                         (D("254.0"), DAY + timedelta(hours=18), D("205.5"),
                          DAY + timedelta(hours=18, minutes=10)))
        self.assertEqual(v.within, D("97.92"))

    def test_the_limits(self) -> None:
        """230 V +-10 %: 207 and 253 V; 220 V +7 % -10 % (GB/T 12325): 235.4 and 198 V."""
        self.assertEqual((VoltageLimits().high, VoltageLimits().low), (D(253), D(207)))
        gb = VoltageLimits(D(220), D(7), D(10))
        self.assertEqual((gb.high, gb.low), (D("235.4"), D(198)))
        # 230 V, 253.0 V at 12:00 on L3 is over 235.4 V: 10 minutes more over.
        v = day_voltage({"C": samples(V3, Q10)}, DAY, END, gb)
        assert v is not None
        self.assertEqual((v.over, v.under, v.within), ((0, 0, 10), (0, 0, 0), D("99.31")))

    def test_an_interval_counts_only_within_the_day(self) -> None:
        """A 60-minute interval starting at 23:30 counts 30 minutes; one starting the day
        before not at all; none measured: no figures."""
        late = Sample(DAY + timedelta(hours=23, minutes=30), timedelta(hours=1), D(260))
        early = Sample(DAY - timedelta(hours=1), timedelta(hours=1), D(260))
        v = day_voltage({"A": [early, late]}, DAY, END)
        assert v is not None
        self.assertEqual((v.minutes, v.over_minutes, v.within), (30, 30, D(0)))
        self.assertIsNone(day_voltage({"A": [early]}, DAY, END))
        self.assertIsNone(day_voltage({}, DAY, END))

    def test_the_meters_of_an_area_overlap(self) -> None:
        """Two meters on phase B, under 18:00-18:15 and 18:10-18:20: 20 minutes."""
        b15 = samples(day_of("230", Q15, {"18:00": "205"}), Q15)
        b10 = samples(day_of("230", Q10, {"18:10": "200"}), Q10)
        v = day_voltage({"B": b15 + b10}, DAY, END)
        assert v is not None
        self.assertEqual((v.minutes, v.under, v.lowest, v.within),
                         (1440, (0, 20, 0), D(200), D("98.61")))


class MeasuredImbalanceTests(unittest.TestCase):
    def test_phase_currents(self) -> None:
        phases = phase_values({"A": samples(I1, Q15), "B": samples(I2, Q15),
                               "C": samples(I3, Q15)}, DAY, END)
        m = measured_imbalance("current", phases)
        assert m is not None
        self.assertEqual((m.source, m.phase_a, m.phase_b, m.phase_c), ("current", D(10),
                                                                       D(10), D("6.875")))
        self.assertEqual((m.imbalance, m.peak, m.peak_time),
                         (D("23.26"), D("85.71"), DAY + timedelta(hours=12)))

    def test_only_intervals_with_all_three_phases_count(self) -> None:
        """L3 missing at 12:00 and 12:15: every interval left is 22.22 %."""
        c = [x for x in samples(I3, Q15) if x.value != 1]
        m = measured_imbalance("current", phase_values(
            {"A": samples(I1, Q15), "B": samples(I2, Q15), "C": c}, DAY, END))
        assert m is not None
        self.assertEqual((m.phase_c, m.imbalance, m.peak, m.peak_time),
                         (D(7), D("22.22"), D("22.22"), DAY))
        self.assertIsNone(measured_imbalance("current", phase_values(
            {"A": samples(I1, Q15), "B": samples(I2, Q15)}, DAY, END)))

    def test_summary_meters_are_summed_where_all_have_all_phases(self) -> None:
        one = {"A": {DAY: D(10), DAY + Q15: D(10)}, "B": {DAY: D(10)}, "C": {DAY: D(4)}}
        two = {"A": {DAY: D(2)}, "B": {DAY: D(2)}, "C": {DAY: D(2)}}
        self.assertEqual(summed_phases([one, two]),
                         {"A": {DAY: D(12)}, "B": {DAY: D(12)}, "C": {DAY: D(6)}})
        self.assertEqual(summed_phases([]), {"A": {}, "B": {}, "C": {}})

    def test_phase_of_an_obis_quantity(self) -> None:
        self.assertEqual([phase_of(c) for c in (L1V, L2V, L3V, L1I, L2P, L3P)],
                         ["A", "B", "C", "A", "B", "C"])


class LoadSettingsTests(unittest.TestCase):
    def test_the_defaults(self) -> None:
        s = VeeSettings()
        self.assertEqual((s.voltage_channels, s.current_channels, s.power_channels),
                         ((L1V, L2V, L3V), (L1I, L2I, L3I), (L1P, L2P, L3P)))
        self.assertEqual(s.voltage_limits, VoltageLimits(D(230), D(10), D(10)))

    def test_the_example_file_gives_the_defaults(self) -> None:
        from fep.analysis.settings import load

        example = load(Path(__file__).parents[2] / "etc" / "vee.example.ini")
        s = VeeSettings()
        self.assertEqual((example.voltage_channels, example.current_channels,
                          example.power_channels, example.voltage_limits),
                         (s.voltage_channels, s.current_channels, s.power_channels,
                          s.voltage_limits))

    def test_the_keys_of_the_load_section(self) -> None:
        s = parse("[load]\nvoltage = 1-0:32.24.0, 1-0:52.24.0, 1-0:72.24.0\n"
                  "currents = 1-0:31.24.0\npowers = 1-0:22.7.0, 1-0:42.7.0\n"
                  "nominal_voltage = 220 V\nover_voltage = 7 %\nunder_voltage = 10\n")
        self.assertEqual([str(c) for c in s.voltage_channels],
                         ["1-0:32.24.0*255", "1-0:52.24.0*255", "1-0:72.24.0*255"])
        self.assertEqual(([str(c) for c in s.current_channels], len(s.power_channels)),
                         (["1-0:31.24.0*255"], 2))
        self.assertEqual(s.voltage_limits, VoltageLimits(D(220), D(7), D(10)))

    def test_errors_name_the_key(self) -> None:
        for text, key, words in (("voltage = 1-0:31.7.0", "voltage", "not a per-phase"),
                                 ("currents = 1-0:1.7.0", "currents", "not a per-phase"),
                                 ("over_voltage = 120 %", "over_voltage", "0 to 100"),
                                 ("nominal_voltage = -5", "nominal_voltage", "above 0")):
            with self.assertRaisesRegex(ConfigError, words) as e:
                parse(f"[load]\n{text}\n", "vee.ini")
            self.assertEqual((e.exception.section, e.exception.key), ("load", key))


def block(meter: str, obis: ObisCode, values: list[D], period: timedelta, **kw: Any
          ) -> IntervalBlock:
    return IntervalBlock(meter, obis, DAY, period, tuple(values), **kw)


def measured_blocks() -> list[IntervalBlock]:
    """What meters V, P, Q and the area T1's meters measure per phase (above)."""
    v1 = list(V1)
    v1[at("05:00", Q10)] = D(100)
    bad = [Quality.OK] * 144
    bad[at("05:00", Q10)] = Quality.DATA_NOT_VALID
    thousand = day_of("1000", Q15)
    return [
        block("V", L1V, v1, Q10, statuses=tuple(bad)),
        block("V", L2V, V2, Q10),
        block("V", L3V, [v / 1000 for v in V3], Q10, unit=VOLT, scaler=3),
        # W: one interval no number, one marked missing (both left out), one None.
        block("W", L1V, ["NaN", "n/a", D(300), None, *[D(230)] * 140], Q10,
              statuses=(Quality.OK, Quality.OK, Quality.MISSING, *[Quality.OK] * 141)),
        block("P", L1I, I1, Q15), block("P", L2I, I2, Q15), block("P", L3I, I3, Q15),
        block("P", L1P, thousand, Q15), block("P", L2P, thousand, Q15),
        block("P", L3P, thousand, Q15),
        block("Q", L1P, thousand, Q15), block("Q", L2P, thousand, Q15),
        block("Q", L3P, day_of("700", Q15), Q15),
        block("S", L1I, I1, Q15), block("S", L2I, I2, Q15), block("S", L3I, I3, Q15),
        block("A", L1V, V1, Q10),
        block("B", L1V, day_of("230", Q15, {"18:00": "205"}), Q15),
        block("C", L1V, day_of("230", Q10), Q10),
        block("C", L2V, day_of("230", Q10, {"18:10": "200"}), Q10),
        block("C", L3V, day_of("230", Q10), Q10),
    ]


def check_area(test: unittest.TestCase, t1: dict[str, Any]) -> None:
    """T1's row as above (values as DayLoad.as_dict gives them)."""
    test.assertEqual((t1["imbalance_source"], t1["phase_a"], t1["phase_b"], t1["phase_c"],
                      t1["imbalance"], t1["imbalance_peak"], t1["imbalance_network"]),
                     ("current", D(10), D(10), D("6.875"), D("23.26"), D("85.71"),
                      D("64.27")))
    test.assertEqual((t1["voltage_minutes"], t1["over_voltage_minutes"],
                      t1["under_voltage_minutes"], t1["over_voltage_a"],
                      t1["under_voltage_b"], t1["voltage_max"], t1["voltage_min"],
                      t1["voltage_min_time"], t1["voltage_within"]),
                     (1440, 20, 20, 20, 20, D(254), D(200),
                      DAY + timedelta(hours=18, minutes=10), D("98.61")))


class MeasuredStoreBehaviours:
    """run_load through the store: the meters' own channels read and counted as above."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def load_of(self, network: str = AREAS, **kw: Any) -> list[DayLoad]:
        store = self.new_store()
        await store.open()
        try:
            await store.write([*blocks(), *measured_blocks()])
            await AnalysisStore(store).save_network(areas.read_csv(network))
            report = await jobs.run_load(store, VeeSettings(), date(2026, 12, 1), **kw)
        finally:
            await store.close()
        return report.days

    async def test_a_meters_voltage(self) -> None:
        [v] = await self.load_of(meter="V")
        d = v.as_dict()
        self.assertEqual((d["voltage_minutes"], d["over_voltage_minutes"],
                          d["under_voltage_minutes"], d["over_voltage_a"],
                          d["under_voltage_b"], d["under_voltage_c"], d["voltage_max"],
                          d["voltage_min"], d["voltage_within"]),
                         (1440, 20, 40, 20, 30, 10, D("254.0"), D("205.5"), D("97.92")))
        self.assertEqual((v.intervals, v.imbalance_source), (0, None))

    async def test_values_that_are_no_voltage_are_left_out(self) -> None:
        [w] = await self.load_of(meter="W")
        assert w.voltage is not None
        self.assertEqual((w.voltage.minutes, w.voltage.over_minutes, w.voltage.highest),
                         (1400, 0, D(230)))

    async def test_a_meters_own_phases(self) -> None:
        [p] = await self.load_of(meter="P")
        self.assertEqual((p.imbalance_source, p.phase_c, p.imbalance, p.imbalance_peak,
                          p.imbalance_time),
                         ("current", D("6.875"), D("23.26"), D("85.71"),
                          DAY + timedelta(hours=12)))
        self.assertIsNone(p.voltage)
        [q] = await self.load_of(meter="Q")
        self.assertEqual((q.imbalance_source, q.phase_a, q.phase_c, q.imbalance),
                         ("power", D(1000), D(700), D("22.22")))

    async def test_an_area_and_its_members(self) -> None:
        rows = await self.load_of(area="T1", members=True)
        check_area(self, rows[0].as_dict())  # type: ignore[arg-type]
        by = {d.subject: d.as_dict() for d in rows[1:]}
        # Member B's own row: its L1, 15 minutes under; no phases of its own.
        self.assertEqual((by["B"]["under_voltage_a"], by["B"]["under_voltage_b"],
                          by["B"]["imbalance_source"]), (15, 0, None))


    async def test_an_area_whose_summary_meter_is_no_input_is_estimated(self) -> None:
        """S as energy out of T1: its currents are not the area's; the members' estimate."""
        [t1] = await self.load_of(AREAS.replace("S,summary,in", "S,summary,out"), area="T1")
        self.assertEqual((t1.imbalance_source, t1.imbalance, t1.imbalance_network),
                         ("network", D("64.27"), None))


class SqliteMeasuredTests(MeasuredStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresMeasuredTests(MeasuredStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


class MeasuredCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        await store.write([*blocks(), *measured_blocks()])
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text(AREAS, encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(csv))
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_fep_load(self) -> None:
        result = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--area", "T1",
                          "--format", "csv")
        self.assertEqual(result.returncode, 0, result.stderr)
        header, row = result.stdout.splitlines()
        t1 = dict(zip(header.split(","), row.split(","), strict=True))
        self.assertEqual({k: t1[k] for k in (
            "imbalance", "imbalance_source", "imbalance_network", "over_voltage_minutes",
            "under_voltage_minutes", "voltage_max_time", "voltage_within")},
            {"imbalance": "23.26", "imbalance_source": "current", "imbalance_network": "64.27",
             "over_voltage_minutes": "20", "under_voltage_minutes": "20",
             "voltage_max_time": "2026-12-01T18:00:00Z", "voltage_within": "98.61"})

    def test_other_limits_from_vee_ini(self) -> None:
        """220 V +7 % -10 % (235.4 to 198 V): V's L1 254 V and L3 253 V are over, 205.5 V
        is within: 30 minutes over, 0 under."""
        vee = Path(self.mktemp() + ".ini")
        vee.write_text("[load]\nnominal_voltage = 220\nover_voltage = 7 %\n", encoding="utf-8")
        result = fep_main("--db", self.db, "load", "--from", "2026-12-01", "--meter", "V",
                          "--vee", str(vee), "--format", "csv")
        self.assertEqual(result.returncode, 0, result.stderr)
        header, row = result.stdout.splitlines()
        v = dict(zip(header.split(","), row.split(","), strict=True))
        self.assertEqual((v["over_voltage_minutes"], v["under_voltage_minutes"]), ("30", "0"))

    def test_the_columns_are_the_rows_fields(self) -> None:
        from fep.cli.analysis import LOAD_COLUMNS

        row = DayLoad("M", "meter", DAY.date(), 0, D(0), None, None, None, None, None)
        self.assertEqual(list(LOAD_COLUMNS), list(row.as_dict()))


class MeasuredDoorsTests(unittest.TestCase):
    """GET /api/v1/load and the console's load() carry the new fields (T1 as above)."""

    async def setUp(self) -> None:
        from fep.model import Meter
        from fep.operator.http import site
        from fep.operator.metrics import FepMetrics
        from fep.operator.tokens import TokenFile
        from tests.operator.helpers import TOKENS, make_context

        self.ctx = await make_context(self, [Meter(m, "dlms", "tcp:10.0.0.1:4059")
                                             for m in ("S", "A", "B", "C")])
        await self.ctx.store.write([*blocks(), *measured_blocks()])
        await AnalysisStore(self.ctx.store).save_network(areas.read_csv(AREAS))
        port = reactor.listenTCP(0, site(self.ctx, TokenFile.parse(TOKENS),
                                         FepMetrics.create()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    async def test_the_api(self) -> None:
        from tests.operator.helpers import VIEWER_TOKEN, http

        r = await http(self.base + "load?from=2026-12-01&area=T1", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        [t1] = r.json()["days"]
        self.assertEqual({k: t1[k] for k in (
            "imbalance_source", "phase_c", "imbalance", "imbalance_network",
            "over_voltage_minutes", "under_voltage_minutes", "over_voltage_a",
            "under_voltage_b", "voltage_max", "voltage_min_time", "voltage_within")},
            {"imbalance_source": "current", "phase_c": "6.875", "imbalance": "23.26",
             "imbalance_network": "64.27", "over_voltage_minutes": 20,
             "under_voltage_minutes": 20, "over_voltage_a": 20, "under_voltage_b": 20,
             "voltage_max": "254.0", "voltage_min_time": "2026-12-01T18:10:00+00:00",
             "voltage_within": "98.61"})

    async def test_the_console(self) -> None:
        from fep.operator.manhole import OperatorCommands

        viewer = OperatorCommands(self.ctx, "watch", "SHA256:w", "viewer")
        load = await viewer.load("2026-12-01", area="T1")
        row = load.rows[0]
        self.assertEqual((row["imbalance"], row["imbalance_source"],
                          row["over_voltage_minutes"], row["under_voltage_minutes"],
                          row["voltage_within"]),
                         (D("23.26"), "current", 20, 20, D("98.61")))

    def test_docs_openapi_lists_every_field(self) -> None:
        text = (Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text()
        start = text.index("\n  /load:")
        load = text[start:text.index("\n                  profile:", start)]
        row = DayLoad("M", "meter", DAY.date(), 0, D(0), None, None, None, None, None)
        self.assertEqual([k for k in row.as_dict() if f" {k}: " not in load], [])
