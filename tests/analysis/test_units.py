"""Values stored with a prefix (1.5 kWh is stored as 1.5 with scaler 3, fep.model) are
analysed in their base unit, so one area can hold meters that store kWh and meters that store
Wh (a DL/T 645 or Q/GDW 1376.1 summary meter in kWh with DLMS members in Wh).

Area T1, 1 Dec 2026, every interval of the day alike: summary meter S stores 1.000 kWh
(scaler 3) = 1000 Wh; member A stores 480 Wh (scaler 0), member B 0.470 kWh (scaler 3) =
470 Wh. Consumption 950 Wh per interval, loss 50 of 1000 = 5.000 % (read without the scalers
it would be 481 "Wh" against an input of 1: a negative loss of -48,000 %). The register
rule reads B's register in kWh too: 10.000 kWh at 00:00 and 55.120 kWh at 24:00 is an
advance of 45,120 Wh against 96 x 470 = 45,120 Wh of intervals: no finding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.series import in_base_unit
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore
from fep.model import IntervalBlock, Meter, ObisCode, Quality, Reading, Unit
from fep.store.sqlite import SqliteStore

CHANNEL = ObisCode(1, 0, 1, 29, 0)
REGISTER = ObisCode(1, 0, 1, 8, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
WH = Unit.by_code(30)


class BaseUnitTests(unittest.TestCase):
    def test_in_base_unit(self) -> None:
        self.assertEqual(str(in_base_unit(D("1.5"), 3)), "1500")
        self.assertEqual(str(in_base_unit(D("12.3456"), 3)), "12345.6")
        self.assertEqual(str(in_base_unit(D("5"), -1)), "0.5")
        self.assertEqual(in_base_unit(D("7"), 0), D(7))
        self.assertIsNone(in_base_unit(None, 3))

    async def test_an_area_of_kwh_and_wh_meters(self) -> None:
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        await store.add_meters([Meter(m, "dlms", f"tcp:h:{n + 1}")
                                for n, m in enumerate("SAB")])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,name,kind,parent,meter,role,direction,phase\n"
            "T1,Transformer 1,transformer,,,,,\nT1,,,,S,summary,in,\n"
            "T1,,,,A,member,,A\nT1,,,,B,member,,B\n"))
        ok = (Quality.OK,) * 96
        await store.write([
            IntervalBlock("S", CHANNEL, DAY, Q15, (D("1.000"),) * 96, ok, unit=WH, scaler=3),
            IntervalBlock("A", CHANNEL, DAY, Q15, (D(480),) * 96, ok, unit=WH),
            IntervalBlock("B", CHANNEL, DAY, Q15, (D("0.470"),) * 96, ok, unit=WH, scaler=3),
            Reading("B", REGISTER, D("10.000"), unit=WH, scaler=3, meter_time=DAY),
            Reading("B", REGISTER, D("55.120"), unit=WH, scaler=3,
                    meter_time=DAY + timedelta(days=1))])
        settings = VeeSettings()
        (result,) = await jobs.run_balance(store, settings, DAY.date())
        self.assertEqual((result.day.input, result.day.consumption, result.day.loss_rate),
                         (D(96000), D(91200), D(5)))
        vee = await jobs.run_vee(store, settings, DAY.date())
        findings = await AnalysisStore(store).findings(DAY, DAY + timedelta(days=1), "B")
        self.assertEqual([f.rule for f in findings], [], vee)
