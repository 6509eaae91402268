"""DL/T 698.45 objects as fep records: the OI table's OBIS-like codes, units and scalers,
demand with its time, frozen rows at their frozen time, event rows as MeterEvents, and
values fep cannot map said so, not guessed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from twisted.trial import unittest

from fep.model import EventKind, ObisCode, Reading
from fep.protocols.dlt698.apdu import ResultNormal, ResultRecord
from fep.protocols.dlt698.client import DEFAULT_METER_TZ
from fep.protocols.dlt698.data import CSD, OAD, Data, DataType
from fep.protocols.dlt698.objects import (
    NoMapping,
    obis_table,
    quantity,
    readings,
    record_records,
)

AT = datetime(2024, 1, 1, tzinfo=UTC)
U32 = DataType.DOUBLE_LONG_UNSIGNED


def read(oad: OAD, data: Data) -> list[Reading]:
    return readings(ResultNormal(oad, data), meter="m", tz=DEFAULT_METER_TZ, received=AT)


class TableTests(unittest.TestCase):
    def test_each_element_has_its_own_obis_code(self) -> None:
        rows = obis_table()
        # Attribute 4 (high precision energy) files the same quantity as attribute 2.
        codes = [obis for oad, obis, _ in rows if oad[4:6] != "04"]
        self.assertEqual(len(codes), len(set(codes)))
        self.assertIn(("00100201", "1-0:1.8.0*255", "forward active energy, total"), rows)
        self.assertIn(("00200203", "1-0:2.8.2*255", "reverse active energy, tariff 2"), rows)
        self.assertIn(("00110201", "1-0:21.8.0*255", "phase A forward active energy, total"),
                      rows)
        self.assertIn(("20000202", "1-0:52.7.0*255", "phase B voltage"), rows)
        self.assertIn(("40000200", "0-0:1.0.0*255", "date and time"), rows)

    def test_energy_scaler_and_unit(self) -> None:
        q = quantity(OAD(0x0010, 2, 1))
        assert q is not None
        self.assertEqual((q.unit and q.unit.symbol, q.scaler, q.raw_scaler), ("Wh", 3, -2))
        high = quantity(OAD(0x0010, 4, 1))
        assert high is not None
        self.assertEqual(high.raw_scaler, -4)


class ValueTests(unittest.TestCase):
    def test_energy_array_total_and_tariffs(self) -> None:
        got = read(OAD(0x0010, 2), Data.array([Data(U32, v) for v in (12345, 100, 0)]))
        self.assertEqual([(r.obis.e, r.value) for r in got],
                         [(0, Decimal("123.45")), (1, Decimal("1.00")), (2, Decimal("0.00"))])
        self.assertEqual(got[0].unit_text, "kWh")

    def test_one_element_read_alone(self) -> None:
        (r,) = read(OAD(0x0010, 2, 2), Data(U32, 5))
        self.assertEqual((r.obis, r.value, r.native_id),
                         (ObisCode(1, 0, 1, 8, 1), Decimal("0.05"), "00100202"))

    def test_maximum_demand_carries_its_time(self) -> None:
        value = Data.structure([Data(U32, 34567), Data.date_time_s(datetime(2024, 2, 28, 18, 30))])
        (r, *_) = read(OAD(0x1010, 2), Data.array([value]))
        self.assertEqual((r.obis, r.value, r.unit_text), (ObisCode(1, 0, 1, 6, 0),
                                                          Decimal("3.4567"), "kW"))
        self.assertEqual(r.meter_time, datetime(2024, 2, 28, 10, 30, tzinfo=UTC))

    def test_clock_is_kept_in_utc(self) -> None:
        (r,) = read(OAD(0x4000, 2), Data.date_time_s(datetime(2024, 3, 1, 16, 0)))
        self.assertEqual(r.meter_time, datetime(2024, 3, 1, 8, 0, tzinfo=UTC))
        self.assertEqual(r.value, "2024-03-01T08:00:00+00:00")

    def test_null_elements_are_no_reading(self) -> None:
        self.assertEqual(read(OAD(0x0010, 2), Data.null()), [])

    def test_unknown_oi_and_wrong_shape_are_no_mapping(self) -> None:
        with self.assertRaises(NoMapping):
            read(OAD(0x1234, 2), Data(U32, 1))
        with self.assertRaises(NoMapping):
            read(OAD(0x0010, 2), Data(U32, 1))
        with self.assertRaises(NoMapping):
            read(OAD(0x2000, 2, 1), Data(DataType.VISIBLE_STRING, "x"))
        with self.assertRaises(NoMapping):
            readings(ResultNormal(OAD(0x0010, 2), dar=6), meter="m", tz=UTC, received=AT)


class RecordTests(unittest.TestCase):
    def test_frozen_rows_are_filed_at_their_frozen_time(self) -> None:
        rcsd = (CSD(oad=OAD(0x2021, 2)), CSD(oad=OAD(0x0010, 2)), CSD(oad=OAD(0x9999, 2)))
        rows = ((Data.date_time_s(datetime(2016, 1, 20)), Data.array([Data(U32, 100)]),
                 Data(U32, 1)),)  # fmt: skip
        records, skipped = record_records(ResultRecord(OAD(0x5004, 2), rcsd, rows), meter="m",
                                          tz=DEFAULT_METER_TZ, received=AT)  # fmt: skip
        (r,) = records
        assert isinstance(r, Reading)
        self.assertEqual((r.value, r.native_id), (Decimal("1.00"), "50040200/00100201"))
        self.assertEqual(r.meter_time, datetime(2016, 1, 19, 16, tzinfo=UTC))
        self.assertEqual([s[0] for s in skipped], ["50040200/99990200"])

    def test_event_rows(self) -> None:
        rcsd = (CSD(oad=OAD(0x2022, 2)), CSD(oad=OAD(0x201E, 2)), CSD(oad=OAD(0x2020, 2)))
        rows = ((Data(U32, 4), Data.date_time_s(datetime(2024, 3, 1, 10)),
                 Data.null()),)  # fmt: skip
        records, _ = record_records(ResultRecord(OAD(0x301B, 2), rcsd, rows), meter="m",
                                    tz=DEFAULT_METER_TZ, received=AT)  # fmt: skip
        (event,) = records
        self.assertEqual(event.kind, EventKind.COVER_OPEN)  # type: ignore[union-attr]
        self.assertEqual(event.time, datetime(2024, 3, 1, 2, tzinfo=UTC))  # type: ignore[union-attr]

    def test_profile_blocks_break_at_gaps(self) -> None:
        rcsd = (CSD(oad=OAD(0x2021, 2)), CSD(oad=OAD(0x0010, 2, 1)))
        start = datetime(2024, 1, 1, 0, 15)
        times = [start, start + timedelta(minutes=15), start + timedelta(minutes=45)]
        rows = tuple((Data.date_time_s(t), Data(U32, i)) for i, t in enumerate(times))
        records, _ = record_records(ResultRecord(OAD(0x5002, 2), rcsd, rows), meter="m",
                                    tz=UTC, received=AT, period=timedelta(minutes=15))
        self.assertEqual([len(b.values) for b in records], [2, 1])  # type: ignore[union-attr]

    def test_rows_read_as_each_value_alone_would_be(self) -> None:
        # Every kind of column in one answer: numbers of known quantities (read by the
        # column's plan), an energy array, demand with its time, the clock, a text, an
        # unknown OAD and a number of the wrong type (skipped, said once), a null; the
        # records are what `readings` makes of each value on its own, at the row's time.
        from fep.protocols.dlt698.objects import _readings_of

        oads = (OAD(0x2021, 2), OAD(0x0010, 2, 1), OAD(0x0020, 2, 2), OAD(0x0010, 2),
                OAD(0x1010, 2, 1), OAD(0x4000, 2), OAD(0x4001, 2), OAD(0x9999, 2),
                OAD(0x2000, 2, 1))
        demand = Data.structure([Data(U32, 34567), Data.date_time_s(datetime(2024, 2, 28, 18))])
        rows = tuple(
            (Data.date_time_s(datetime(2024, 1, 1, 0, 15 * k)), Data(U32, 100 + k),
             Data.null() if k == 1 else Data(U32, 7), Data.array([Data(U32, 5), Data(U32, 2)]),
             demand, Data.date_time_s(datetime(2024, 1, 1, 8)),
             Data(DataType.OCTET_STRING, b"\x00\x01"), Data(U32, 1),
             Data(DataType.VISIBLE_STRING, "x") if k == 2 else Data(DataType.LONG_UNSIGNED, 2201))
            for k in range(3))
        result = ResultRecord(OAD(0x5002, 2), tuple(CSD(oad=o) for o in oads), rows)
        for received in (AT, datetime(2024, 1, 1, 8, tzinfo=DEFAULT_METER_TZ)):
            records, skipped = record_records(result, meter="m", tz=DEFAULT_METER_TZ,
                                              received=received)
            expected: list[Reading] = []
            for row in rows:
                stamp = row[0].to_datetime(DEFAULT_METER_TZ)
                assert stamp is not None
                for oad, data in zip(oads[1:], row[1:], strict=True):
                    try:
                        expected += _readings_of(oad, data, meter="m", tz=DEFAULT_METER_TZ,
                                                 received=received,
                                                 meter_time=stamp.astimezone(UTC),
                                                 prefix="50020200/")
                    except NoMapping:
                        pass
            self.assertEqual(records, expected)
            self.assertEqual([s[0] for s in skipped], ["50020200/99990200", "50020200/20000201"])
