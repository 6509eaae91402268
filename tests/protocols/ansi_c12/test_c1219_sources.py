"""C12.19 decade 1 beyond ST12: ST11 limits, ST13 demand control, ST14 data control, ST15
constants, ST16 source links, and what they do to register and load-profile values.

ST11, ST12 and ST16 come from published dumps (tests/fixtures/ansi_c12/published_tables.txt,
sources named there). No published ST13, ST14 or ST15 bytes were found: those tests
assemble bytes by hand from the C12.19 layouts and name the fields they set.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import UNITS, IntervalBlock, ObisCode
from fep.protocols.ansi_c12.c1219 import (
    ActualLoadProfile,
    ActualRegisters,
    ActualSources,
    ConstantsSelector,
    CurrentRegisters,
    DataBlock,
    DataSelection,
    DemandControl,
    DemandInterval,
    DemandRecord,
    ElectricConstants,
    GeneralConfig,
    ListStatus,
    LpBlock,
    LpChannel,
    LpInterval,
    LpSelection,
    LpSetDims,
    NiFormat,
    SetConstants,
    SourceLink,
    SourceSet,
    TimeBase,
    UomEntry,
    decode_constants,
    decode_data_control,
    decode_source_links,
    decode_uom_entries,
    describe_uom,
    encode_constants,
    encode_data_control,
    encode_source_links,
    profile_blocks,
    register_readings,
    uom_quantity,
)
from tests.protocols.ansi_c12.published import TABLES

LITTLE = GeneralConfig(ni_format1=NiFormat.INT32_1, ni_format2=NiFormat.INT32_1)
BIG = GeneralConfig(big_endian=True, ni_format1=NiFormat.INT32, ni_format2=NiFormat.INT32)
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class PublishedSourceTablesTests(unittest.TestCase):
    """The Hexing dumps: ST11, ST12 and ST16 of one meter model."""

    def setUp(self) -> None:
        self.actual = ActualSources.decode(TABLES["hexing_st11"])
        self.uoms = decode_uom_entries(TABLES["hexing_st12"], LITTLE)
        self.links = decode_source_links(TABLES["hexing_st16"], self.actual)

    def test_st11_flags_and_counts(self) -> None:
        # 0x2A: RESET_EXCLUDE (bit 1), SLIDING_DEMAND (bit 3), SET1_PRESENT (bit 5).
        a = self.actual
        self.assertEqual(
            (a.pf_exclude, a.reset_exclude, a.block_demand, a.sliding_demand,
             a.thermal_demand, a.set1_present, a.set2_present, a.no_offset),
            (False, True, False, True, False, True, False, False),
        )  # fmt: skip
        self.assertEqual(
            (a.nbr_uom_entries, a.nbr_demand_ctrl_entries, a.data_ctrl_length,
             a.nbr_data_ctrl_entries, a.nbr_constants_entries, a.constants_selector,
             a.nbr_sources),
            (42, 10, 0, 0, 1, ConstantsSelector.ELECTRIC, 42),
        )  # fmt: skip

    def test_st11_encodes_back(self) -> None:
        self.assertEqual(self.actual.encode(), TABLES["hexing_st11"])

    def test_firmware_st11_bit_7_is_no_offset(self) -> None:
        # 0x8F: PF_EXCLUDE, RESET_EXCLUDE, BLOCK and SLIDING demand, and bit 7.
        actual = ActualSources.decode(TABLES["firmware_st11"])
        self.assertEqual(
            (actual.pf_exclude, actual.block_demand, actual.sliding_demand, actual.no_offset),
            (True, True, True, True),
        )
        self.assertEqual((actual.nbr_sources, actual.nbr_constants_entries), (50, 50))
        self.assertEqual(actual.encode(), TABLES["firmware_st11"])

    def test_st12_has_the_entries_st11_counts(self) -> None:
        self.assertEqual(len(self.uoms), self.actual.nbr_uom_entries)

    def test_st12_energy_entries_map_to_their_obis_quantities(self) -> None:
        # 00400200 read low byte first is 0x00024000: ID 0 (W), bulk, Q1 (bit 14), Q4 (17).
        self.assertEqual(self.uoms[0], UomEntry(0, TimeBase.BULK, 0, q1=True, q4=True))
        # +A, -A, |A| (all quadrants), net (NET_FLOW bit 18); varh Q1+Q2, Q3+Q4.
        self.assertEqual(
            [uom_quantity(u, rate=False) for u in self.uoms[:6]],
            [(1, 30), (2, 30), (15, 30), (16, 30), (3, 32), (4, 32)],
        )

    def test_st12_phase_current_and_demand_entries(self) -> None:
        # 0C2A2800 -> 0x00282A0C: ID 12 (A), time base 2, MULTIPLIER 5 (10^-2), SEGMENTATION 5.
        current = self.uoms[16]
        self.assertEqual((current.id_code, current.exponent, current.segmentation), (12, -2, 5))
        self.assertEqual(uom_quantity(current, rate=False), (31, 33))  # L1 current, A
        self.assertEqual(describe_uom(current), "RMS current, period, phase A-N, x10^-2")
        # 00440200 -> 0x00024400: ID 0, TIME_BASE 4 (block demand), Q1+Q4: +A demand in W.
        self.assertEqual(self.uoms[32].time_base, TimeBase.BLOCK_DEMAND)
        self.assertEqual(uom_quantity(self.uoms[32], rate=True), (1, 27))

    def test_st16_links(self) -> None:
        # 0x19: UOM entry, constants, engineering units; 0x11: UOM entry, engineering
        # units; 0x12: demand control, engineering units.
        energy = SourceLink(uom_entry=True, constants=True, engineering_units=True)
        plain = SourceLink(uom_entry=True, engineering_units=True)
        demand = SourceLink(demand_ctrl=True, engineering_units=True)
        self.assertEqual(self.links, (energy,) * 22 + (plain,) * 10 + (demand,) * 10)
        self.assertEqual(encode_source_links(self.links), TABLES["hexing_st16"])

    def test_demand_sources_keep_their_st12_unit_though_st16_has_no_uom_flag(self) -> None:
        sources = SourceSet(self.actual, self.uoms, links=self.links)
        self.assertEqual(sources.uom(32), self.uoms[32])

    def test_shorter_st13_serves_the_flagged_sources_in_order(self) -> None:
        # Ten demand control entries, ten flagged sources at 32..41.
        intervals = tuple(DemandInterval(sub_interval=5, multiplier=k + 1) for k in range(10))
        control = DemandControl(reset_exclusion=0, intervals=intervals)
        sources = SourceSet(self.actual, self.uoms, control, links=self.links)
        self.assertEqual([sources.demand_minutes(i) for i in (32, 33, 41)], [5, 10, 50])
        self.assertIsNone(sources.demand_minutes(0))  # no DEMAND_CTRL_FLAG

    def test_one_constants_entry_serves_every_flagged_source(self) -> None:
        links = tuple(
            SourceLink(uom_entry=True, constants=True, constant_to_be_applied=i < 22)
            for i in range(42)
        )
        ct = ElectricConstants(Decimal(40))
        sources = SourceSet(self.actual, self.uoms, constants=(ct,), links=links)
        self.assertEqual(sources.value(21, Decimal("2.5")), Decimal("100.0"))
        self.assertEqual(sources.value(22, Decimal("2.5")), Decimal("2.5"))


class DemandControlTests(unittest.TestCase):
    def test_block_demand_layout(self) -> None:
        # RESET_EXCLUDE and PF_EXCLUDE set, block demand: RESET_EXCLUSION 10,
        # P_FAIL_RECOGNTN_TM 3 s, P_FAIL_EXCLUSION 15, COLD_LOAD_PICKUP 30, then
        # INT_LENGTH 15 and 30 minutes (UINT16, little endian).
        actual = ActualSources(pf_exclude=True, reset_exclude=True, block_demand=True,
                               nbr_demand_ctrl_entries=2)  # fmt: skip
        raw = bytes.fromhex("0A 03 0F 1E 0F00 1E00")
        control = DemandControl.decode(raw, LITTLE, actual)
        self.assertEqual(
            control,
            DemandControl(10, 3, 15, 30, (DemandInterval(length=15), DemandInterval(length=30))),
        )
        self.assertEqual(control.encode(LITTLE, actual), raw)

    def test_sliding_demand_layout(self) -> None:
        # SLIDING_DEMAND: SUB_INT 5 minutes and INT_MULTIPLIER 3 a source.
        actual = ActualSources(sliding_demand=True, nbr_demand_ctrl_entries=1)
        control = DemandControl.decode(b"\x05\x03", BIG, actual)
        self.assertEqual(control.intervals, (DemandInterval(5, 3),))
        self.assertEqual(control.intervals[0].minutes, 15)

    def test_big_endian_interval_length(self) -> None:
        actual = ActualSources(nbr_demand_ctrl_entries=1)
        self.assertEqual(DemandControl.decode(b"\x00\x3c", BIG, actual).intervals[0].minutes, 60)

    def test_extra_bytes_are_a_frame_error_naming_st13(self) -> None:
        actual = ActualSources(nbr_demand_ctrl_entries=1)
        with self.assertRaises(FrameError) as cm:
            DemandControl.decode(b"\x00\x3c\x00", BIG, actual)
        self.assertEqual((cm.exception.field, cm.exception.offset), ("ST13", 2))


class DataControlTests(unittest.TestCase):
    def test_entries_of_data_ctrl_length(self) -> None:
        actual = ActualSources(data_ctrl_length=3, nbr_data_ctrl_entries=2)
        self.assertEqual(decode_data_control(b"ABCDEF", actual), (b"ABC", b"DEF"))
        self.assertEqual(encode_data_control((b"ABC", b"DEF"), actual), b"ABCDEF")

    def test_wrong_length_names_st14(self) -> None:
        actual = ActualSources(data_ctrl_length=3, nbr_data_ctrl_entries=2)
        with self.assertRaises(FrameError) as cm:
            decode_data_control(b"ABCDE", actual)
        self.assertEqual(cm.exception.field, "ST14")


class ConstantsTests(unittest.TestCase):
    def test_electric_record_with_set1(self) -> None:
        # INT32 (NI format 8), big endian: MULTIPLIER 80, OFFSET -2, then SET1: SET_FLAGS
        # 00 (not applied), RATIO_F1 400 (CT 400:5 as 80), RATIO_P1 1.
        actual = ActualSources(set1_present=True, nbr_constants_entries=1)
        raw = bytes.fromhex("00000050 FFFFFFFE 00 00000190 00000001")
        (entry,) = decode_constants(raw, BIG, actual)
        self.assertEqual(
            entry,
            ElectricConstants(Decimal(80), Decimal(-2),
                              SetConstants(False, Decimal(400), Decimal(1))),
        )  # fmt: skip
        self.assertEqual(entry.apply(Decimal("1.5")), Decimal(118))
        self.assertEqual(encode_constants((entry,), BIG, actual), raw)

    def test_no_offset_flag_leaves_the_offset_out(self) -> None:
        actual = ActualSources(no_offset=True, nbr_constants_entries=2)
        raw = bytes.fromhex("00000002 00000003")
        entries = decode_constants(raw, BIG, actual)
        self.assertEqual([e.multiplier for e in entries], [2, 3])
        self.assertEqual([e.offset for e in entries], [0, 0])
        self.assertEqual(encode_constants(entries, BIG, actual), raw)

    def test_int32_with_four_decimals(self) -> None:
        # NI format 4, little endian: 1.2500 is 12500.
        actual = ActualSources(nbr_constants_entries=1)
        raw = (12500).to_bytes(4, "little") + bytes(4)
        self.assertEqual(decode_constants(raw, LITTLE, actual)[0].multiplier, Decimal("1.25"))

    def test_gas_constants_are_refused_naming_the_selector(self) -> None:
        actual = ActualSources(nbr_constants_entries=1, constants_selector=0)
        with self.assertRaises(FrameError) as cm:
            decode_constants(bytes(40), BIG, actual)
        self.assertEqual(cm.exception.field, "CONSTANTS_SELECTOR")

    def test_short_table_names_st15(self) -> None:
        actual = ActualSources(nbr_constants_entries=2)
        with self.assertRaises(FrameError) as cm:
            decode_constants(bytes(12), BIG, actual)
        self.assertEqual(cm.exception.field, "ST15")


class SourceSetTests(unittest.TestCase):
    UOMS = (
        UomEntry(0, TimeBase.BULK, 2, q1=True, q4=True),  # kWh delivered
        UomEntry(0, TimeBase.BLOCK_DEMAND, 2, q1=True, q4=True),  # kW delivered
        UomEntry(8, TimeBase.INSTANTANEOUS, 0, segmentation=5),  # volts L1
    )
    APPLY = SourceLink(uom_entry=True, data_ctrl=True, constants=True,
                       constant_to_be_applied=True)  # fmt: skip

    def sources(self, *links: SourceLink) -> SourceSet:
        ct = ElectricConstants(Decimal(80), Decimal(0))
        return SourceSet(
            ActualSources(nbr_sources=3),
            self.UOMS,
            DemandControl(intervals=(DemandInterval(length=15),) * 3),
            (b"kWh+", b"kW+ ", b"\x01\x02\x03\x04"),
            (ct, ct, ElectricConstants()),
            links,
        )

    def test_constants_apply_only_where_st16_says_so(self) -> None:
        applied = self.sources(self.APPLY, SourceLink(uom_entry=True, constants=True),
                               SourceLink(uom_entry=True))  # fmt: skip
        self.assertEqual(applied.value(0, Decimal("1.5")), Decimal("120.0"))
        self.assertEqual(applied.value(1, Decimal("1.5")), Decimal("1.5"))  # already applied
        self.assertEqual(applied.value(2, Decimal("1.5")), Decimal("1.5"))  # no constants

    def test_name_gives_unit_identifier_interval_and_constants(self) -> None:
        sources = self.sources(self.APPLY, SourceLink(uom_entry=True, demand_ctrl=True),
                               SourceLink(uom_entry=True, data_ctrl=True))  # fmt: skip
        self.assertEqual(
            sources.name(0),
            "source 0: active power, bulk, Q1+Q4, x10^3; id kWh+; constants x80+0 applied",
        )
        self.assertEqual(
            sources.name(1), "source 1: active power, block demand, Q1+Q4, x10^3; 15 min demand"
        )
        self.assertEqual(
            sources.name(2), "source 2: RMS voltage, instantaneous, phase A-N; id 01020304"
        )

    def test_pulse_source_without_constants_has_no_engineering_units(self) -> None:
        pulses = SourceLink(uom_entry=True, engineering_units=False)
        sources = self.sources(pulses, attrs.evolve(self.APPLY, engineering_units=False),
                               SourceLink())  # fmt: skip
        self.assertFalse(sources.in_engineering_units(0))
        self.assertTrue(sources.in_engineering_units(1))  # its constants convert it
        self.assertIn("pulses", sources.name(0))

    def test_register_readings_apply_constants_and_name_sources(self) -> None:
        sources = self.sources(self.APPLY, self.APPLY, SourceLink(uom_entry=True))
        regs = ActualRegisters(nbr_summations=1, nbr_demands=1, nbr_coin_values=1, nbr_occur=1)
        selection = DataSelection((0,), (1,), (True,), (2,), (0,))
        block = DataBlock(
            (Decimal("12.5"),), (DemandRecord((Decimal("0.25"),)),), ((Decimal("230.1"),),)
        )
        readings = register_readings(
            "m1", CurrentRegisters(block), regs, selection, sources=sources, meter_time=NOW,
            received_time=NOW,
        )  # fmt: skip
        got = {str(r.obis): (r.value, r.unit_text) for r in readings}
        self.assertEqual(
            got,
            {"1-0:1.8.0*255": (Decimal("1000.0"), "kWh"),
             "1-0:1.6.0*255": (Decimal("20.00"), "kW"),
             "1-0:130.0.0*255": (Decimal("230.1"), "V")},
        )  # fmt: skip
        energy = next(r for r in readings if r.obis == ObisCode(1, 0, 1, 8, 0))
        self.assertEqual(
            energy.native_id,
            "ST23 total summation 0 (source 0: active power, bulk, Q1+Q4, x10^3; id kWh+; "
            "constants x80+0 applied)",
        )

    def test_register_readings_of_a_pulse_source_have_no_unit(self) -> None:
        sources = self.sources(SourceLink(uom_entry=True, engineering_units=False),
                               SourceLink(), SourceLink())  # fmt: skip
        regs = ActualRegisters(nbr_summations=1)
        (reading,) = register_readings(
            "m1", CurrentRegisters(DataBlock((Decimal(7),))), regs,
            DataSelection((0,), (), (), (), ()), sources=sources,
        )  # fmt: skip
        self.assertEqual((reading.unit, reading.scaler, reading.value), (None, 0, 7))

    def test_without_st16_the_old_native_id_stays(self) -> None:
        regs = ActualRegisters(nbr_summations=1)
        (reading,) = register_readings(
            "m1", CurrentRegisters(DataBlock((Decimal(7),))), regs,
            DataSelection((0,), (), (), (), ()), self.UOMS,
        )  # fmt: skip
        self.assertEqual(reading.native_id, "ST23 total summation 0")

    def test_profile_intervals_get_the_constants(self) -> None:
        sources = self.sources(self.APPLY, SourceLink(), SourceLink())
        actual = ActualLoadProfile(sets=(LpSetDims(1, 2, 1, 15), None, None, None))
        selection = LpSelection((LpChannel(0),), 2)
        end = NOW
        block = LpBlock(end, (LpInterval((Decimal(1),)), LpInterval((Decimal(2),))))
        status = ListStatus(nbr_valid=1, last_element=0, valid_in_newest=2)
        (profile,) = profile_blocks("m1", actual, selection, status, (block,), sources=sources)
        self.assertIsInstance(profile, IntervalBlock)
        self.assertEqual(profile.values, (Decimal(80), Decimal(160)))
        self.assertEqual(
            (profile.start, profile.unit, profile.scaler),
            (end - timedelta(minutes=30), UNITS[30], 3),
        )
        self.assertEqual(str(profile.obis), "1-0:1.29.0*255")


class ArbitraryBytesTests(unittest.TestCase):
    """Arbitrary bytes into every new decoder: a record or a FrameError, nothing else."""

    @given(st.binary(max_size=12))
    def test_st11(self, data: bytes) -> None:
        try:
            actual = ActualSources.decode(data)
        except FrameError:
            return
        self.assertEqual(actual.encode(), data[:8])

    @given(st.binary(max_size=64), st.binary(min_size=8, max_size=8), st.booleans())
    def test_st13_st14_st15_st16(self, data: bytes, st11: bytes, big: bool) -> None:
        actual = ActualSources.decode(st11)
        config = BIG if big else LITTLE
        for decode in (
            lambda: DemandControl.decode(data, config, actual),
            lambda: decode_data_control(data, actual),
            lambda: decode_constants(data, config, actual),
            lambda: decode_source_links(data, actual),
        ):
            try:
                decode()
            except FrameError:
                pass

    @given(
        st.lists(
            st.builds(ElectricConstants, st.integers(-(2**31), 2**31 - 1).map(Decimal),
                      st.integers(-(2**31), 2**31 - 1).map(Decimal)),
            max_size=4,
        )
    )  # fmt: skip
    def test_constants_round_trip(self, entries: list[ElectricConstants]) -> None:
        actual = ActualSources(nbr_constants_entries=len(entries))
        raw = encode_constants(tuple(entries), BIG, actual)
        self.assertEqual(decode_constants(raw, BIG, actual), tuple(entries))

