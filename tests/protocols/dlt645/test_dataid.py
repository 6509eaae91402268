"""DL/T 645 data identifiers: formats, units, OBIS equivalents, readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.model import ObisCode
from fep.protocols.dlt645 import dataid, services
from fep.protocols.dlt645.dataid import CATALOGUE_1997, CATALOGUE_2007, DataItem, Kind
from fep.protocols.dlt645.frames import decode_frame
from tests.protocols.dlt645.published import FRAMES

BEIJING = timezone(timedelta(hours=8))


def read(di: int, hex_data: str, edition: int = 2007) -> list:
    return dataid.decode(di, bytes.fromhex(hex_data), meter="m1", edition=edition)


class PublishedValueTests(unittest.TestCase):
    def test_issue_response_is_four_hundredths_of_a_kwh_forward_active_total(self) -> None:
        result = services.decode_read(decode_frame(FRAMES["read_total_forward_active_response"]))
        (reading,) = dataid.decode(result.di, result.data, meter="m1")
        self.assertEqual(
            (reading.value, reading.unit_text, reading.obis, reading.native_id),
            (Decimal("0.04"), "kWh", ObisCode(1, 0, 1, 8, 0), "00010000"),
        )

    def test_kaledl_1997_response_is_one_hundredth_of_a_kwh(self) -> None:
        result = services.decode_read(decode_frame(FRAMES["kaledl_1997_read_9010_response"]))
        (reading,) = dataid.decode(result.di, result.data, meter="m1", edition=1997)
        self.assertEqual((reading.value, reading.native_id), (Decimal("0.01"), "9010"))

    def test_heyuan_1997_response_is_100_volts_on_phase_a(self) -> None:
        result = services.decode_read(decode_frame(FRAMES["heyuan_1997_read_b611_response"]))
        (reading,) = dataid.decode(result.di, result.data, meter="m1", edition=1997)
        self.assertEqual(
            (reading.value, reading.unit_text, reading.obis),
            (Decimal(100), "V", ObisCode(1, 0, 32, 7, 0)),
        )


class FormatTests(unittest.TestCase):
    def test_phase_a_voltage_has_one_decimal(self) -> None:
        (reading,) = read(0x02010100, "1022")
        self.assertEqual((reading.value, reading.unit_text), (Decimal("221.0"), "V"))

    def test_negative_current_has_its_sign_in_the_top_bit(self) -> None:
        (reading,) = read(0x02020200, "501280")
        self.assertEqual(
            (reading.value, reading.obis), (Decimal("-1.250"), ObisCode(1, 0, 51, 7, 0))
        )

    def test_total_active_power_is_kw_with_four_decimals(self) -> None:
        (reading,) = read(0x02030000, "345612")
        self.assertEqual((reading.value, reading.unit_text), (Decimal("12.5634"), "kW"))

    def test_power_factor_has_no_unit(self) -> None:
        (reading,) = read(0x02060100, "8509")
        self.assertEqual((reading.value, reading.unit), (Decimal("0.985"), None))

    def test_frequency_is_hz_with_two_decimals(self) -> None:
        (reading,) = read(0x02800002, "0250")
        self.assertEqual((reading.value, reading.unit_text), (Decimal("50.02"), "Hz"))

    def test_combined_active_energy_may_be_negative(self) -> None:
        (reading,) = read(0x00000000, "00000180")
        self.assertEqual((reading.value, reading.obis.c), (Decimal("-100.00"), 15))

    def test_max_demand_keeps_when_it_occurred_in_utc(self) -> None:
        (reading,) = read(0x01010000, "5023013014170524")
        self.assertEqual((reading.value, reading.unit_text), (Decimal("1.2350"), "kW"))
        self.assertEqual(reading.meter_time, datetime(2024, 5, 17, 6, 30, tzinfo=UTC))
        self.assertEqual(reading.obis, ObisCode(1, 0, 1, 6, 0))

    def test_max_demand_without_a_time_has_no_meter_time(self) -> None:
        (reading,) = read(0x01010000, "0000000000000000")
        self.assertIsNone(reading.meter_time)

    def test_last_settlement_period_tariff_2_maps_to_f_101(self) -> None:
        (reading,) = read(0x00010201, "00000000")
        self.assertEqual(reading.obis, ObisCode(1, 0, 1, 8, 2, 101))

    def test_date_is_iso_text(self) -> None:
        (reading,) = read(0x04000101, "05170524")
        self.assertEqual((reading.value, reading.obis), ("2024-05-17", ObisCode(1, 0, 0, 9, 2)))

    def test_time_is_iso_text(self) -> None:
        (reading,) = read(0x04000102, "304513")
        self.assertEqual(reading.value, "13:45:30")

    def test_date_and_time_give_the_meter_clock_in_utc(self) -> None:
        (reading,) = read(0x0400010C, "30451305170524")
        self.assertEqual(reading.meter_time, datetime(2024, 5, 17, 5, 45, 30, tzinfo=UTC))

    def test_meter_time_zone_is_the_callers(self) -> None:
        (reading,) = dataid.decode(0x0400010C, bytes.fromhex("30451305170524"), meter="m1", tz=UTC)
        self.assertEqual(reading.meter_time, datetime(2024, 5, 17, 13, 45, 30, tzinfo=UTC))

    def test_meter_number_is_its_digits(self) -> None:
        (reading,) = read(0x04000402, "370300928139")
        self.assertEqual(reading.value, "398192000337")

    def test_wrong_length_is_a_frame_error_naming_the_di(self) -> None:
        with self.assertRaises(FrameError) as cm:
            read(0x00010000, "000000")
        self.assertEqual(cm.exception.field, "DI 00010000")

    def test_non_bcd_data_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, read, 0x00010000, "0A000000")

    def test_impossible_date_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, read, 0x04000101, "05321324")

    def test_unknown_di_is_a_protocol_error_naming_it(self) -> None:
        with self.assertRaises(ProtocolError) as cm:
            read(0x7F000000, "00")
        self.assertIn("7F000000", str(cm.exception))


class BlockTests(unittest.TestCase):
    def test_energy_block_gives_total_then_tariffs(self) -> None:
        readings = read(0x0001FF00, "0001000000020000000300000004000000050000")
        self.assertEqual(
            [(r.native_id, r.value) for r in readings],
            [
                ("00010000", Decimal("1.00")),
                ("00010100", Decimal("2.00")),
                ("00010200", Decimal("3.00")),
                ("00010300", Decimal("4.00")),
                ("00010400", Decimal("5.00")),
            ],
        )

    def test_voltage_block_gives_three_phases(self) -> None:
        readings = read(0x0201FF00, "202210223022")
        self.assertEqual([r.obis.c for r in readings], [32, 52, 72])

    def test_meter_with_fewer_tariffs_sends_a_shorter_block(self) -> None:
        self.assertEqual(len(read(0x0001FF00, "00000000" * 3)), 3)

    def test_1997_block_901f(self) -> None:
        readings = read(0x901F, "00000000" * 5, edition=1997)
        self.assertEqual(readings[-1].native_id, "9014")

    def test_block_with_a_partial_member_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, read, 0x0001FF00, "000000000000")


class CatalogueTests(unittest.TestCase):
    def test_every_2007_energy_quantity_has_totals_tariffs_and_periods(self) -> None:
        for di2 in range(0x0B):
            for di1 in range(5):
                for di0 in range(13):
                    self.assertIn(di2 << 16 | di1 << 8 | di0, CATALOGUE_2007)

    def test_parse_di_reads_hex_most_significant_first(self) -> None:
        self.assertEqual((dataid.parse_di("00010000"), dataid.parse_di("9010")), (0x10000, 0x9010))

    def test_obis_codes_are_unique_within_an_edition(self) -> None:
        for table in (CATALOGUE_2007, CATALOGUE_1997):
            obis = [item.obis for item in table.values()]
            self.assertEqual(len(obis), len(set(obis)))


ITEMS = st.sampled_from(sorted({**CATALOGUE_2007}.values(), key=lambda i: i.di)) | st.sampled_from(
    sorted(CATALOGUE_1997.values(), key=lambda i: i.di)
)


@st.composite
def item_values(draw: st.DrawFn) -> tuple[DataItem, object, datetime | None]:
    item = draw(ITEMS)
    fmt = item.fmt
    when = None
    if fmt.kind in (Kind.NUMBER, Kind.DEMAND):
        digits = 2 * fmt.number_length - (1 if fmt.signed else 0)
        units = draw(st.integers(-(10**digits) + 1 if fmt.signed else 0, 10**digits - 1))
        value: object = Decimal(units).scaleb(-fmt.decimals)
        if fmt.kind is Kind.DEMAND:
            when = draw(
                st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30)).map(
                    lambda d: d.replace(second=0, microsecond=0, tzinfo=BEIJING)
                )
            )
    elif fmt.kind is Kind.DATE:
        value = draw(
            st.dates(datetime(2000, 1, 1).date(), datetime(2099, 12, 31).date())
        ).isoformat()
    elif fmt.kind is Kind.TIME:
        value = draw(st.times()).replace(microsecond=0).isoformat()
    elif fmt.kind is Kind.DATETIME:
        value = (
            draw(st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30)))
            .replace(microsecond=0, tzinfo=BEIJING)
            .astimezone(UTC)
            .isoformat()
        )
    else:
        value = draw(st.integers(0, 10**12 - 1)).__format__("012d")
    return item, value, when


class RoundTripTests(unittest.TestCase):
    @given(item_values())
    def test_encode_then_decode_gives_the_value_back(self, case: tuple) -> None:
        item, value, when = case
        reading = item.decode(item.encode(value, meter_time=when), meter="m1")
        self.assertEqual(reading.value, value)
        if when is not None:
            self.assertEqual(reading.meter_time, when)

    @given(ITEMS, st.binary(max_size=10))
    def test_arbitrary_bytes_give_a_reading_or_a_frame_error(
        self, item: DataItem, raw: bytes
    ) -> None:
        try:
            reading = item.decode(raw, meter="m1")
        except FrameError:
            return
        self.assertEqual(reading.native_id, item.native_id)
