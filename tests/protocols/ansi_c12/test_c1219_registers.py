"""ANSI C12.19 registers: NI number formats, ST21 actual registers, ST23 current data.

Table bytes are assembled by hand from the C12.19 layouts; each test names its fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.ansi_c12.c1219 import (
    NI_LENGTH,
    ActualRegisters,
    CurrentRegisters,
    DataBlock,
    DemandRecord,
    GeneralConfig,
    NiFormat,
    TimeFormat,
    decode_current_registers,
    decode_ni,
    encode_current_registers,
    encode_ni,
)

# NI_FORMAT1 INT48 for summations, NI_FORMAT2 INT24 for demands, UINT8 times, little endian.
CONFIG = GeneralConfig(
    time_format=TimeFormat.UINT8, ni_format1=NiFormat.INT48, ni_format2=NiFormat.INT24
)
# ST21: date/time field and demand reset counter present; 2 summations, 1 demand, 1
# occurrence, no coincidents, 1 tier.
ST21 = bytes.fromhex("06 00 00 02 01 00 01 01 00 00")
REGISTERS = ActualRegisters.decode(ST21)


class NiFormatTests(unittest.TestCase):
    def test_int32_1_has_four_implied_decimals(self) -> None:
        self.assertEqual(
            decode_ni(bytes.fromhex("39300000"), NiFormat.INT32_1, "little", 23), Decimal("1.2345")
        )

    def test_integers_are_twos_complement_in_data_order(self) -> None:
        self.assertEqual(decode_ni(b"\xff\xff\xfe", NiFormat.INT24, "big", 23), Decimal(-2))

    def test_float_char_is_text(self) -> None:
        self.assertEqual(decode_ni(b"  12.5", NiFormat.FLOAT_CHAR6, "little", 23), Decimal("12.5"))

    def test_float_char_that_is_no_number_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, decode_ni, b"  12x5", NiFormat.FLOAT_CHAR6, "little", 23)

    def test_float32(self) -> None:
        self.assertEqual(
            decode_ni(bytes.fromhex("0000C03F"), NiFormat.FLOAT32, "little", 23), Decimal("1.5")
        )

    def test_float_nan_is_a_frame_error(self) -> None:
        self.assertRaises(
            FrameError, decode_ni, bytes.fromhex("0000C07F"), NiFormat.FLOAT32, "little", 23
        )

    def test_value_too_big_for_its_format_is_refused(self) -> None:
        self.assertRaises(ValueError, encode_ni, Decimal(2**23), NiFormat.INT24, "little")

    def test_fixed_bcd(self) -> None:
        self.assertEqual(
            decode_ni(bytes.fromhex("00123456"), NiFormat.FIXED_BCD4, "little", 23), 123456
        )

    @given(st.sampled_from(list(NiFormat)), st.booleans(), st.integers(-(2**23) + 1, 2**23 - 1))
    def test_round_trip(self, fmt: NiFormat, big: bool, units: int) -> None:
        order = "big" if big else "little"
        if fmt in (NiFormat.FIXED_BCD4, NiFormat.FIXED_BCD6, NiFormat.FIXED_BCD8):
            value = Decimal(abs(units))
        elif fmt == NiFormat.FLOAT_CHAR6:
            value = Decimal(units % 99999)
        elif fmt == NiFormat.INT32_1:
            value = Decimal(units).scaleb(-4)
        else:
            value = Decimal(units)
        self.assertEqual(decode_ni(encode_ni(value, fmt, order), fmt, order, 23), value)

    @given(st.sampled_from(list(NiFormat)), st.binary(min_size=21, max_size=21))
    def test_arbitrary_bytes_give_a_number_or_a_frame_error(
        self, fmt: NiFormat, raw: bytes
    ) -> None:
        try:
            value = decode_ni(raw[: NI_LENGTH[fmt]], fmt, "little", 23)
        except FrameError:
            return
        self.assertTrue(value.is_finite())


class ActualRegistersTests(unittest.TestCase):
    def test_flags_and_counts(self) -> None:
        self.assertEqual(
            (
                REGISTERS.date_time_field,
                REGISTERS.demand_reset_counter,
                REGISTERS.cum_demand,
                REGISTERS.nbr_summations,
                REGISTERS.nbr_demands,
                REGISTERS.nbr_tiers,
            ),
            (True, True, False, 2, 1, 1),
        )

    def test_encode_gives_the_bytes_back(self) -> None:
        self.assertEqual(REGISTERS.encode(), ST21)

    def test_short_table_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, ActualRegisters.decode, ST21[:9])


ST23 = bytes.fromhex(
    "03"  # NBR_DEMAND_RESETS
    # total: summations 1234567 and 89 (INT48), demand at 2024-05-17 13:45 (UINT8 STIME),
    # demand value 4321 (INT24)
    "87D612000000"
    "590000000000"
    "180511 0D2D"
    "E11000"
    # tier 1: summations 1000 and 0, no demand time recorded, demand 0
    "E80300000000"
    "000000000000"
    "0000000000"
    "000000"
)


class CurrentRegistersTests(unittest.TestCase):
    def test_total_summations_and_demand(self) -> None:
        current = decode_current_registers(ST23, CONFIG, REGISTERS)
        self.assertEqual(current.demand_resets, 3)
        self.assertEqual(current.total.summations, (Decimal(1234567), Decimal(89)))
        (demand,) = current.total.demands
        self.assertEqual(demand.demands, (Decimal(4321),))
        self.assertEqual(demand.event_times, (datetime(2024, 5, 17, 13, 45, tzinfo=UTC),))

    def test_demand_times_use_the_meter_zone(self) -> None:
        current = decode_current_registers(
            ST23, CONFIG, REGISTERS, tz=timezone(timedelta(hours=-5))
        )
        self.assertEqual(
            current.total.demands[0].event_times, (datetime(2024, 5, 17, 18, 45, tzinfo=UTC),)
        )

    def test_tier_block_with_unset_demand_time(self) -> None:
        (tier,) = decode_current_registers(ST23, CONFIG, REGISTERS).tiers
        self.assertEqual(
            (tier.summations[0], tier.demands[0].event_times), (Decimal(1000), (None,))
        )

    def test_encode_gives_the_bytes_back(self) -> None:
        current = decode_current_registers(ST23, CONFIG, REGISTERS)
        self.assertEqual(encode_current_registers(current, CONFIG, REGISTERS), ST23)

    def test_short_table_is_a_frame_error_naming_st23(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_current_registers(ST23[:-1], CONFIG, REGISTERS)
        self.assertEqual(cm.exception.field, "ST23")

    def test_extra_bytes_are_a_frame_error(self) -> None:
        self.assertRaises(FrameError, decode_current_registers, ST23 + b"\0", CONFIG, REGISTERS)

    @given(
        st.sampled_from([NiFormat.INT32, NiFormat.INT48, NiFormat.FLOAT64, NiFormat.INT32_1]),
        st.sampled_from(list(TimeFormat)[1:]),
        st.booleans(),
        st.lists(st.integers(-(10**5), 10**5), min_size=4, max_size=4),
        st.none() | st.datetimes(datetime(1971, 1, 1), datetime(2069, 1, 1)),
    )
    def test_round_trip(self, ni, tm, big, numbers, when) -> None:
        config = GeneralConfig(time_format=tm, big_endian=big, ni_format1=ni, ni_format2=ni)
        registers = ActualRegisters(
            date_time_field=True, cum_demand=True, nbr_summations=2, nbr_demands=1, nbr_occur=1,
            nbr_tiers=1,
        )  # fmt: skip
        if when is not None:
            when = when.replace(second=0, microsecond=0, tzinfo=UTC)
        a, b, c, d = (Decimal(n) for n in numbers)
        current = CurrentRegisters(
            DataBlock((a, b), (DemandRecord((c,), (when,), d, None),)),
            (DataBlock((b, a), (DemandRecord((d,), (None,), c, None),)),),
        )
        encoded = encode_current_registers(current, config, registers)
        self.assertEqual(decode_current_registers(encoded, config, registers), current)

    @given(st.binary(max_size=80))
    def test_arbitrary_bytes_give_registers_or_a_frame_error(self, raw: bytes) -> None:
        for config in (CONFIG, GeneralConfig(time_format=TimeFormat.MINUTES_SECONDS, ni_format1=0)):
            try:
                decode_current_registers(raw, config, REGISTERS)
            except FrameError:
                pass


class RecordBoundTests(unittest.TestCase):
    """Issue 14 (eighth fuzz run): a layout whose records take no bytes is bounded by
    RECORDS_PER_TABLE beyond the table's bytes, not by the counts' product."""

    # No time format, 255 self-reads of 255 tiers of 255 demands with no occurrences and
    # no cumulative fields: every record of ST26 takes zero bytes.
    CONFIG = GeneralConfig(time_format=TimeFormat.NONE)
    EMPTY = ActualRegisters(date_time_field=True, nbr_self_reads=255, nbr_demands=255,
                            nbr_tiers=255)

    def test_st26_of_empty_self_reads_is_a_frame_error(self) -> None:
        from fep.protocols.ansi_c12.snapshots import decode_self_reads

        with self.assertRaises(FrameError) as caught:
            decode_self_reads(bytes(6), self.CONFIG, self.EMPTY)
        self.assertIn("records from 6 bytes", caught.exception.message)

    def test_st23_of_empty_records_decodes_within_the_bound_and_not_past_it(self) -> None:
        # Eight tiers of 255 empty demands: 2,304 records, within the bound.
        eight = attrs.evolve(self.EMPTY, nbr_tiers=8)
        current = decode_current_registers(b"", self.CONFIG, eight)
        self.assertEqual((len(current.tiers), len(current.total.demands)), (8, 255))
        # 256 blocks of 255: 65,536 records from no bytes, past it.
        self.assertRaises(FrameError, decode_current_registers, b"", self.CONFIG, self.EMPTY)

    def test_the_fuzzers_input_ends_quickly(self) -> None:
        import time
        from pathlib import Path

        from tests.fuzz.c12_targets import c1219_control

        data = (Path(__file__).parents[2] / "fuzz" / "corpus" / "c1219_control"
                / "regress-st26-empty-self-reads-5a430ad8").read_bytes()
        started = time.process_time()
        c1219_control(data)
        # 7.5 s of CPU before; the bound makes it a fraction of that even on a busy machine.
        self.assertLess(time.process_time() - started, 5.0)
