"""ANSI C12.19 standard tables: ST0, ST1, ST3, ST5 and ST52 decoders and encoders.

The table bytes here are assembled by hand from the C12.19 field layouts (no published
table dumps were found); each test names the fields it sets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import ObisCode
from fep.protocols.ansi_c12 import tables
from fep.protocols.ansi_c12.c1219 import (
    ActualLoadProfile,
    Clock,
    DeviceId,
    EdMode,
    GeneralConfig,
    LpChannel,
    LpSelection,
    LpSetDims,
    ManufacturerId,
    ModeStatus,
    StdStatus,
    TimeFormat,
    decode_lp_data,
)

# ST0: little endian, ISO 8859/1 (CHAR_FORMAT 2), TM_FORMAT 2, ID_FORM characters,
# device class "EE  ", C12.19 version 2.0, 2 bytes of standard tables (tables 0, 1, 3, 5
# used; 0..7 and 52 would need 7 bytes, kept short here), 1 byte of manufacturer tables,
# 1 byte of standard procedures, none of manufacturer procedures, 2 manufacturer status
# bytes, no pending tables.
ST0 = bytes.fromhex(
    "04 02 00"  # FORMAT_CONTROL_1..3
    "45452020"  # DEVICE_CLASS
    "00 00 00 00 02 00"  # nameplate, default set, max proc parm, max resp, version 2.0
    # DIM_STD_TBLS, DIM_MFG_TBLS, DIM_STD_PROC, DIM_MFG_PROC, DIM_MFG_STATUS, NBR_PENDING
    "02 01 01 00 02 00"
    "2B 00"  # STD_TBLS_USED: 0, 1, 3, 5
    "01"  # MFG_TBLS_USED: 0
    "03"  # STD_PROC_USED: 0, 1
    "00 00"  # STD_TBLS_WRITE: none
    "00"  # MFG_TBLS_WRITE: none
)
CONFIG = GeneralConfig.decode(ST0)


class GeneralConfigTests(unittest.TestCase):
    def test_format_controls(self) -> None:
        self.assertEqual(
            (CONFIG.big_endian, CONFIG.char_format, CONFIG.time_format, CONFIG.id_form_bcd),
            (False, 2, TimeFormat.UINT8, False),
        )

    def test_device_class_and_version(self) -> None:
        self.assertEqual(
            (CONFIG.device_class, CONFIG.std_version, CONFIG.std_revision), (b"EE  ", 2, 0)
        )

    def test_table_sets_are_bit_numbers(self) -> None:
        self.assertEqual(CONFIG.std_tables_used, frozenset({0, 1, 3, 5}))
        self.assertEqual(CONFIG.std_procs_used, frozenset({0, 1}))

    def test_encode_gives_the_bytes_back(self) -> None:
        self.assertEqual(CONFIG.encode(), ST0)

    def test_length_counts_every_set(self) -> None:
        self.assertEqual(CONFIG.length, len(ST0))

    def test_short_table_is_a_frame_error_naming_st0(self) -> None:
        with self.assertRaises(FrameError) as cm:
            GeneralConfig.decode(ST0[:-1])
        self.assertEqual(cm.exception.field, "ST0")

    def test_big_endian_bit(self) -> None:
        self.assertEqual(GeneralConfig.decode(b"\x05" + ST0[1:]).byte_order, "big")


class ManufacturerIdTests(unittest.TestCase):
    ST1 = b"EE  KV2c    \x01\x02\x05\x10" + b"1234567890AB    "

    def test_fields(self) -> None:
        self.assertEqual(
            ManufacturerId.decode(self.ST1, CONFIG),
            ManufacturerId("EE", "KV2c", 1, 2, 5, 16, "1234567890AB"),
        )

    def test_bcd_serial_number_when_id_form_is_bcd(self) -> None:
        config = GeneralConfig(id_form_bcd=True)
        raw = self.ST1[:16] + bytes.fromhex("0000001234567890")
        self.assertEqual(ManufacturerId.decode(raw, config).serial_number, "0000001234567890")

    def test_encode_gives_the_bytes_back(self) -> None:
        self.assertEqual(ManufacturerId.decode(self.ST1, CONFIG).encode(CONFIG), self.ST1)


class DeviceIdTests(unittest.TestCase):
    def test_character_identification_is_stripped(self) -> None:
        self.assertEqual(
            DeviceId.decode(b"METER-0042".ljust(20), CONFIG).identification, "METER-0042"
        )

    def test_bcd_identification(self) -> None:
        raw = bytes.fromhex("00000000000000000042")
        self.assertEqual(
            DeviceId.decode(raw, GeneralConfig(id_form_bcd=True)).identification, "0" * 18 + "42"
        )

    def test_non_bcd_digit_is_a_frame_error(self) -> None:
        raw = bytes.fromhex("0000000000000000004A")
        self.assertRaises(FrameError, DeviceId.decode, raw, GeneralConfig(id_form_bcd=True))


class ModeStatusTests(unittest.TestCase):
    def test_flags_follow_the_data_order(self) -> None:
        status = ModeStatus.decode(bytes.fromhex("01 0008 00 AABB"), CONFIG)
        self.assertEqual(status.mode, EdMode.METERING)
        self.assertEqual(status.std_status, StdStatus.POWER_FAILURE)
        self.assertEqual(status.mfg_status, b"\xaa\xbb")

    def test_big_endian_meter(self) -> None:
        config = GeneralConfig(big_endian=True)
        status = ModeStatus.decode(bytes.fromhex("01 0840 00"), config)
        self.assertEqual(status.std_status, StdStatus.POWER_FAILURE | StdStatus.CLOCK_ERROR)


class ClockTests(unittest.TestCase):
    def test_uint8_local_clock_is_converted_with_the_meter_zone(self) -> None:
        # 2024-05-17 13:45:30, TIME_DATE_QUAL: Friday (5), DST flag, local time.
        raw = bytes([24, 5, 17, 13, 45, 30, 0x0D])
        clock = Clock.decode(raw, CONFIG, tz=timezone(timedelta(hours=-4)))
        self.assertEqual(clock.time, datetime(2024, 5, 17, 17, 45, 30, tzinfo=UTC))
        self.assertEqual((clock.day_of_week, clock.dst, clock.gmt), (5, True, False))

    def test_gmt_flag_means_the_clock_is_utc(self) -> None:
        raw = bytes([24, 5, 17, 13, 45, 30, 0x15])
        clock = Clock.decode(raw, CONFIG, tz=timezone(timedelta(hours=-4)))
        self.assertEqual(clock.time, datetime(2024, 5, 17, 13, 45, 30, tzinfo=UTC))

    def test_bcd_clock(self) -> None:
        config = GeneralConfig(time_format=TimeFormat.BCD)
        clock = Clock.decode(bytes.fromhex("240517134530 10"), config)
        self.assertEqual(clock.time, datetime(2024, 5, 17, 13, 45, 30, tzinfo=UTC))

    def test_seconds_since_1970(self) -> None:
        config = GeneralConfig(time_format=TimeFormat.SECONDS, big_endian=True)
        clock = Clock.decode((1715953530).to_bytes(4, "big") + b"\x10", config)
        self.assertEqual(clock.time, datetime.fromtimestamp(1715953530, UTC))

    def test_impossible_date_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, Clock.decode, bytes([24, 13, 40, 0, 0, 0, 0]), CONFIG)

    def test_no_time_format_is_a_frame_error(self) -> None:
        config = GeneralConfig(time_format=TimeFormat.NONE)
        self.assertRaises(FrameError, Clock.decode, b"\x00" * 7, config)

    def test_clock_reading_is_obis_0_0_1_0_0(self) -> None:
        clock = Clock(datetime(2024, 5, 17, 13, 45, 30, tzinfo=UTC), gmt=True)
        reading = clock.reading("m1")
        self.assertEqual(
            (reading.obis, reading.meter_time, reading.native_id),
            (ObisCode(0, 0, 1, 0, 0), clock.time, "ST52"),
        )

    @given(
        st.sampled_from(list(TimeFormat)[1:]),
        st.booleans(),
        st.datetimes(datetime(1971, 1, 1), datetime(2069, 12, 31)),
        st.booleans(),
    )
    def test_round_trip(self, fmt: TimeFormat, big: bool, when: datetime, gmt: bool) -> None:
        config = GeneralConfig(time_format=fmt, big_endian=big)
        meter_zone = timezone(timedelta(hours=-5))
        clock = Clock(when.replace(microsecond=0, tzinfo=UTC), 3, dst=True, gmt=gmt)
        self.assertEqual(Clock.decode(clock.encode(config, meter_zone), config, meter_zone), clock)


SETS = st.frozensets(st.integers(0, 15), max_size=8)


class PropertyTests(unittest.TestCase):
    @given(
        st.booleans(),
        st.integers(0, 7),
        st.sampled_from(list(TimeFormat)),
        st.booleans(),
        st.binary(min_size=4, max_size=4),
        SETS,
        SETS,
        SETS,
    )
    def test_general_config_round_trip(self, big, chars, fmt, bcd, dev, used, procs, write) -> None:
        config = GeneralConfig(
            big_endian=big,
            char_format=chars,
            time_format=fmt,
            id_form_bcd=bcd,
            device_class=dev,
            dim_std_tables=2,
            dim_std_procs=2,
            std_tables_used=used,
            std_procs_used=procs,
            std_tables_write=write,
        )
        self.assertEqual(GeneralConfig.decode(config.encode()), config)

    @given(st.binary(max_size=60))
    def test_arbitrary_bytes_give_records_or_frame_errors(self, raw: bytes) -> None:
        for decode in (
            GeneralConfig.decode,
            lambda d: ManufacturerId.decode(d, CONFIG),
            lambda d: DeviceId.decode(d, GeneralConfig(id_form_bcd=True)),
            lambda d: ModeStatus.decode(d, CONFIG),
            lambda d: Clock.decode(d, CONFIG),
            lambda d: Clock.decode(d, GeneralConfig(time_format=TimeFormat.BCD)),
            lambda d: Clock.decode(d, GeneralConfig(time_format=TimeFormat.MINUTES_SECONDS)),
        ):
            try:
                decode(raw)
            except FrameError:
                pass


class LoadProfileBoundTests(unittest.TestCase):
    """Issue 14: ST64's declared length (the bytes present) bounds what is decoded."""

    # ST0 with no time format, ST64 used; ST61 declaring data set 1 as 57,600 blocks of
    # 19,200 intervals of 0 channels, no status flags; ST62 with interval format 1.
    CONFIG = GeneralConfig(time_format=TimeFormat.NONE, dim_std_tables=9,
                           std_tables_used=frozenset({0, 61, 62, 64}))
    ACTUAL = ActualLoadProfile(0, 0, 0, (LpSetDims(57_600, 19_200, 0, 15), None, None, None))
    SELECTION = LpSelection((), 1)

    def test_empty_st64_declaring_a_billion_empty_intervals_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as caught:
            decode_lp_data(b"", self.CONFIG, self.ACTUAL, self.SELECTION)
        self.assertEqual(caught.exception.field, "ST61")

    def test_the_same_through_decode_table(self) -> None:
        given = {
            0: self.CONFIG.encode(),
            61: self.ACTUAL.encode(self.CONFIG),
            62: bytes([1]),
            64: b"",
        }
        with self.assertRaises(FrameError):
            tables.decode_table(64, given)

    def test_intervals_need_bytes_even_when_blocks_have_a_time(self) -> None:
        config = GeneralConfig(time_format=TimeFormat.UINT8)
        with self.assertRaises(FrameError):
            decode_lp_data(bytes(5 * 4), config, self.ACTUAL, self.SELECTION)

    def test_a_table_shorter_than_its_layout_is_refused_before_decoding(self) -> None:
        actual = ActualLoadProfile(0, 0, 0, (LpSetDims(60_000, 60_000, 2, 15), None, None, None))
        selection = LpSelection((LpChannel(0), LpChannel(1)), 2)
        with self.assertRaises(FrameError) as caught:
            decode_lp_data(bytes(100), GeneralConfig(), actual, selection)
        self.assertIn("ST61/ST62 describe", caught.exception.message)


class CharacterFloatBoundTests(unittest.TestCase):
    """Issue 14 (fuzzing): a FLOAT_CHAR21 register of 1E+999999999 decoded to a Decimal whose
    int() (the JSON of ``fep read --table``) never ends."""

    def test_exponent_beyond_a_float64_is_a_frame_error(self) -> None:
        from fep.protocols.ansi_c12.c1219 import NiFormat, decode_ni

        with self.assertRaises(FrameError) as caught:
            decode_ni(b"1e999999999".ljust(21), NiFormat.FLOAT_CHAR21, "little", 23)
        self.assertIn("out of range", caught.exception.message)

    def test_ordinary_exponents_still_decode(self) -> None:
        from decimal import Decimal

        from fep.protocols.ansi_c12.c1219 import NiFormat, decode_ni

        self.assertEqual(decode_ni(b"1.5E+3".ljust(12), NiFormat.FLOAT_CHAR12, "little", 23),
                         Decimal("1.5E+3"))
