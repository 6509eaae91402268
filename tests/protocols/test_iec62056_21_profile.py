"""IEC 62056-21 load profile (P.01) and logbook (P.98) answers into IntervalBlocks and
MeterEvents, and the request's time range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import EventKind, ObisCode, Quality, Unit
from fep.protocols.iec62056_21.profile import (
    format_stamp,
    logbook_events,
    parse_stamp,
    profile_blocks,
    range_argument,
    status_quality,
)
from fep.protocols.iec62056_21.readout import parse_data_sets

BERLIN = ZoneInfo("Europe/Berlin")

# Answers of an EMH meter and of a Metcom meter to R5 P.01, published in the tests of an
# open-source IEC 62056-21 parser for German meters (the "iec6205621" parser's IECTest:
# P01_data_1 and P01_data_2).
EMH_P01 = (
    b"P.01(1220823161500)(00000000)(15)(6)(1.5)(kW)(2.5)(kW)(5.5)(kvar)(6.5)(kvar)(7.5)(kvar)"
    b"(8.5)(kvar)\r\n(0.18374)(0.00078)(0.00000)(0.00006)(0.00087)(0.02431)\r\n"
    b"(0.16832)(0.00000)(0.00000)(0.00000)(0.00000)(0.02686)"
)
METCOM_P01 = (
    b"P.01(1220823150000)(08)(15)(6)(1-0:1.5.0)(kW)(1-0:2.5.0)(kW)(1-0:5.5.0)(kvar)"
    b"(1-0:6.5.0)(kvar)(1-0:7.5.0)(kvar)(1-0:8.5.0)(kvar)\r\n"
    b"(0.00000)(0.12683)(0.00000)(0.11411)(0.00000)(0.00000)\r\n"
    b"(0.00028)(0.06188)(0.00059)(0.07409)(0.00000)(0.00000)\r\n"
    b"(0.00000)(0.11250)(0.00000)(0.11677)(0.00000)(0.00000)\r\n"
    b"(0.00006)(0.04656)(0.00082)(0.09270)(0.00000)(0.00000)\r\n"
)
# The header of a LEM EM4TII+ (manual V1.0, 2020, 4.2.6 "Structure of load profile
# compilation"): a twelve-digit stamp without season, a status of eight hex digits (here a
# made-up value in place of the manual's ########), and text channels (C.1.9 consumption
# point, C.5.1 status) besides the energies.
LEM_P01 = (
    b"P.01(121015061841)(00000000)(5)(9)(C.1.9)()(C.5.1)()(C.5.3)()(0.9.17)()(0.9.18)()"
    b"(1.29.0)(kWh)(2.29.0)(kWh)(3.29.0)(kvarh)(4.29.0)(kvarh)\r\n"
    b"(TRAIN 4711)(000000)(1)(2)(3)(0.120)(0.000)(0.010)(0.000)\r\n"
)


def blocks_of(data: bytes, tz=BERLIN):  # type: ignore[no-untyped-def]
    return profile_blocks(parse_data_sets(data).datasets, "m1", tz=tz)


class PublishedProfileTests(unittest.TestCase):
    def test_emh_answer_gives_one_block_per_channel_in_summer_time(self) -> None:
        blocks = blocks_of(EMH_P01)
        self.assertEqual(len(blocks), 6)
        first = blocks[0]
        self.assertEqual(first.obis, ObisCode(1, 0, 1, 5, 0))
        # 2022-08-23 16:15 summer time (season digit 1) is 14:15 UTC: the end of the first
        # interval, which started at 14:00 UTC.
        self.assertEqual(first.start, datetime(2022, 8, 23, 14, 0, tzinfo=UTC))
        self.assertEqual(first.period, timedelta(minutes=15))
        self.assertEqual(first.values, (Decimal("0.18374"), Decimal("0.16832")))
        self.assertEqual((first.unit, first.scaler), (Unit.by_code(27), 3))  # W, k
        self.assertEqual(first.statuses, (Quality.OK, Quality.OK))

    def test_metcom_answer_with_full_obis_codes_and_a_short_status(self) -> None:
        blocks = blocks_of(METCOM_P01)
        by_obis = {str(b.obis): b for b in blocks}
        self.assertEqual(set(by_obis), {f"1-0:{c}.5.0*255" for c in (1, 2, 5, 6, 7, 8)})
        export = by_obis["1-0:2.5.0*255"]
        self.assertEqual(len(export.values), 4)
        self.assertEqual(export.values[-1], Decimal("0.04656"))
        self.assertEqual(export.start, datetime(2022, 8, 23, 12, 45, tzinfo=UTC))
        # Status 08: season change (the VDEW status word's bit 3).
        self.assertEqual(export.statuses[0], Quality.DST)

    def test_lem_header_text_channels_give_no_blocks(self) -> None:
        blocks = blocks_of(LEM_P01, tz=UTC)
        energies = {str(b.obis): b for b in blocks}
        self.assertNotIn("1-0:96.1.9*255", energies)  # the consumption point's text
        for c in (1, 2, 3, 4):
            self.assertIn(f"1-0:{c}.29.0*255", energies)
        self.assertEqual(energies["1-0:1.29.0*255"].start,
                         datetime(2012, 10, 15, 6, 13, 41, tzinfo=UTC))
        self.assertEqual(energies["1-0:1.29.0*255"].period, timedelta(minutes=5))


class RunTests(unittest.TestCase):
    def test_a_new_header_starts_a_new_run_with_its_status(self) -> None:
        data = (b"P.01(0231201001500)(00000000)(15)(1)(1.5)(kW)\r\n(1.0)\r\n(2.0)\r\n"
                b"P.01(0231201004500)(00000080)(15)(1)(1.5)(kW)\r\n(0.0)\r\n"
                b"P.01(0231201010000)(00000000)(15)(1)(1.5)(kW)\r\n(3.0)\r\n")
        (block,) = blocks_of(data, tz=UTC)
        self.assertEqual(block.start, datetime(2023, 12, 1, 0, 0, tzinfo=UTC))
        self.assertEqual(block.values, tuple(Decimal(v) for v in ("1.0", "2.0", "0.0", "3.0")))
        self.assertEqual(block.statuses, (Quality.OK, Quality.OK, Quality.POWER_DOWN,
                                          Quality.OK))

    def test_a_hole_in_the_profile_splits_the_block(self) -> None:
        data = (b"P.01(0231201001500)(00)(15)(1)(1.5)(kW)\r\n(1.0)\r\n"
                b"P.01(0231201011500)(00)(15)(1)(1.5)(kW)\r\n(3.0)\r\n")
        blocks = blocks_of(data, tz=UTC)
        self.assertEqual([(b.start.hour, b.start.minute, len(b.values)) for b in blocks],
                         [(0, 0, 1), (1, 0, 1)])

    def test_an_empty_value_is_missing(self) -> None:
        data = b"P.01(0231201001500)(00)(15)(1)(1.5)(kW)\r\n()\r\n"
        (block,) = blocks_of(data, tz=UTC)
        self.assertEqual((block.values, block.statuses), ((None,), (Quality.MISSING,)))

    def test_values_before_a_header_are_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as caught:
            blocks_of(b"(1.0)\r\n")
        self.assertIn("data line 1", caught.exception.message)

    def test_a_line_with_the_wrong_number_of_values_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as caught:
            blocks_of(b"P.01(0231201001500)(00)(15)(2)(1.5)(kW)(2.5)(kW)\r\n(1.0)\r\n")
        self.assertIn("1 values for 2 channels", caught.exception.message)

    def test_a_bad_period_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            blocks_of(b"P.01(0231201001500)(00)(0)(1)(1.5)(kW)\r\n(1.0)\r\n")


class StampTests(unittest.TestCase):
    def test_season_digit_settles_the_hour_that_occurs_twice(self) -> None:
        # 2023-10-29 02:30 in Berlin happens in summer time (00:30 UTC) and again in winter
        # time (01:30 UTC).
        self.assertEqual(parse_stamp("1231029023000", BERLIN),
                         datetime(2023, 10, 29, 0, 30, tzinfo=UTC))
        self.assertEqual(parse_stamp("0231029023000", BERLIN),
                         datetime(2023, 10, 29, 1, 30, tzinfo=UTC))

    def test_season_two_is_utc(self) -> None:
        self.assertEqual(parse_stamp("22308231615", BERLIN),
                         datetime(2023, 8, 23, 16, 15, tzinfo=UTC))

    def test_without_season_or_seconds(self) -> None:
        self.assertEqual(parse_stamp("2308231615", UTC),
                         datetime(2023, 8, 23, 16, 15, tzinfo=UTC))
        self.assertEqual(parse_stamp("230823161530", UTC),
                         datetime(2023, 8, 23, 16, 15, 30, tzinfo=UTC))

    def test_not_a_stamp(self) -> None:
        for text in ("", "abc", "2313011200", "12345"):
            self.assertIsNone(parse_stamp(text, UTC), text)

    def test_request_range_in_meter_time_with_the_season(self) -> None:
        since = datetime(2023, 8, 23, 14, 0, tzinfo=UTC)
        self.assertEqual(format_stamp(since, BERLIN), "12308231600")
        self.assertEqual(range_argument(since, None, UTC), "02308231400;")
        self.assertEqual(range_argument(since, since + timedelta(hours=1), UTC, season=False),
                         "2308231400;2308231500")


class LogbookTests(unittest.TestCase):
    def test_entries_become_events_per_status_bit(self) -> None:
        data = (b"P.98(0231201010203)(00000080)()(0)\r\n"
                b"P.98(0231201011003)(00000040)()(0)\r\n"
                b"P.98(0231201020000)(000000A0)()(0)\r\n")
        events = logbook_events(parse_data_sets(data).datasets, "m1", tz=UTC)
        self.assertEqual([(e.time.hour, e.time.minute, e.kind) for e in events], [
            (1, 2, EventKind.POWER_OUTAGE),
            (1, 10, EventKind.POWER_RESTORED),
            (2, 0, EventKind.CLOCK_SET),
            (2, 0, EventKind.POWER_OUTAGE),
        ])
        self.assertEqual(events[0].code, "P.98:00000080")
        self.assertEqual(events[0].text, "supply voltage failure")

    def test_status_bits_and_their_meaning(self) -> None:
        data = b"P.98(0231201010203)(00006127)()(0)\r\n"
        events = logbook_events(parse_data_sets(data).datasets, "m1", tz=UTC)
        self.assertEqual([e.code for e in events], [
            "P.98:00000001", "P.98:00000002", "P.98:00000004", "P.98:00000020",
            "P.98:00000100", "P.98:00002000", "P.98:00004000"])
        self.assertEqual([e.kind for e in events[:2]],
                         [EventKind.METER_ERROR, EventKind.LOW_BATTERY])
        self.assertEqual(status_quality(0x000000CA), Quality.CLOCK_INVALID | Quality.DST
                         | Quality.POWER_DOWN)
        self.assertEqual(status_quality(0x25), Quality.DATA_NOT_VALID
                         | Quality.CLOCK_ADJUSTED)

    def test_an_entry_without_known_bits_is_kept_as_other(self) -> None:
        data = b"P.98(0231201010203)(00010000)()(1)(C.5.3)()(2)\r\n"
        (event,) = logbook_events(parse_data_sets(data).datasets, "m1", tz=UTC)
        self.assertEqual((event.kind, event.code), (EventKind.OTHER, "P.98:00010000"))
        self.assertIn("(2)", event.text)

    def test_a_bad_stamp_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            logbook_events(parse_data_sets(b"P.98(yesterday)(00)\r\n").datasets, "m1")


class AnyAnswerTests(unittest.TestCase):
    @given(st.lists(st.one_of(
        st.sampled_from([b"P.01(0231201001500)(00)(15)(1)(1.5)(kW)", b"(1.0)", b"()",
                         b"P.98(0231201010203)(80)()(0)", b"(x)", b"P.01(1)(2)(3)(4)"]),
        st.text(alphabet="P.0198()0123456789;*kW ", max_size=30).map(str.encode)),
        max_size=20))
    def test_decoders_raise_only_frame_errors(self, lines: list[bytes]) -> None:
        try:
            datasets = parse_data_sets(b"\r\n".join(lines)).datasets
        except FrameError:
            return
        for decode in (profile_blocks, logbook_events):
            try:
                decode(datasets, "m1")
            except FrameError:
                pass
