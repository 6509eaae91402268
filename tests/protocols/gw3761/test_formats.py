"""Appendix A data formats: layouts pinned by example, EE fill, and round trips."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.gw3761.formats import FORMATS, Clock, TimeFields, decode, encode


class ExampleTests(unittest.TestCase):
    def test_a1_clock_keeps_its_weekday(self) -> None:
        # The LoRa gateway's class 1 F2 answer: 51 20 23 07 10 18, weekday 0.
        raw = bytes.fromhex("512023071018")
        clock = decode("A.1", raw)
        self.assertEqual(clock, Clock(datetime(2018, 10, 7, 23, 20, 51), 0))
        self.assertEqual(encode("A.1", clock), raw)
        # A datetime gets its ISO weekday: 2018-10-07 was a Sunday (7).
        self.assertEqual(encode("A.1", datetime(2018, 10, 7, 23, 20, 51)),
                         bytes.fromhex("51202307F018"))  # fmt: skip

    def test_a14_energy(self) -> None:
        self.assertEqual(decode("A.14", bytes.fromhex("7856341200")), Decimal("1234.5678"))
        self.assertEqual(encode("A.14", Decimal("123456.7890")), bytes.fromhex("9078563412"))

    def test_signed_formats(self) -> None:
        self.assertEqual(decode("A.5", bytes.fromhex("5489")), Decimal("-95.4"))
        self.assertEqual(decode("A.9", bytes.fromhex("563412")), Decimal("12.3456"))
        self.assertEqual(decode("A.25", bytes.fromhex("450381")), Decimal("-10.345"))
        self.assertEqual(encode("A.25", Decimal("-0.25")), bytes.fromhex("500280"))

    def test_a7_voltage(self) -> None:
        self.assertEqual(decode("A.7", bytes.fromhex("0122")), Decimal("220.1"))

    def test_a2_power_of_ten(self) -> None:
        # G = 100 (10^0), S = 1, 123: -123.
        self.assertEqual(decode("A.2", bytes.fromhex("2391")), Decimal("-123"))
        self.assertEqual(decode("A.2", bytes.fromhex("2301")), Decimal("1.23E+6"))
        self.assertEqual(encode("A.2", decode("A.2", bytes.fromhex("2301"))),
                         bytes.fromhex("2301"))  # fmt: skip

    def test_a3_kwh_or_mwh(self) -> None:
        self.assertEqual(decode("A.3", bytes.fromhex("56341212")), Decimal("-2123456"))
        self.assertEqual(decode("A.3", bytes.fromhex("01000040")), Decimal("1E+3"))

    def test_partial_times(self) -> None:
        self.assertEqual(decode("A.15", bytes.fromhex("3014240709")), datetime(2009, 7, 24, 14, 30))
        self.assertEqual(decode("A.16", bytes.fromhex("28531307")),
                         TimeFields(day=7, hour=13, minute=53, second=28))  # fmt: skip
        self.assertEqual(decode("A.20", bytes.fromhex("311209")), date(2009, 12, 31))
        self.assertEqual(decode("A.21", bytes.fromhex("1209")), date(2009, 12, 1))

    def test_ee_is_no_data(self) -> None:
        for f in FORMATS.values():
            self.assertIsNone(f.decode(bytes([0xEE]) * f.size), f.name)
            self.assertEqual(f.encode(None), bytes([0xEE]) * f.size)

    def test_not_bcd_and_bad_dates_raise_frame_error(self) -> None:
        self.assertRaises(FrameError, decode, "A.14", bytes.fromhex("7A56341200"))
        self.assertRaises(FrameError, decode, "A.15", bytes.fromhex("0000003209"))
        self.assertRaises(FrameError, decode, "A.7", b"\x01")

    def test_values_that_do_not_fit(self) -> None:
        self.assertRaises(ValueError, encode, "A.7", Decimal("1000.0"))
        self.assertRaises(ValueError, encode, "A.11", Decimal("1.001"))
        self.assertRaises(ValueError, encode, "A.9", Decimal("80.0000"))


class RoundTripTests(unittest.TestCase):
    @given(st.sampled_from(sorted(FORMATS)), st.binary(min_size=6, max_size=6))
    def test_bytes_that_decode_encode_back(self, name: str, data: bytes) -> None:
        f = FORMATS[name]
        raw = data[: f.size]
        try:
            value = f.decode(raw)
        except FrameError:
            return
        if name == "A.2" or name == "A.3":
            # Several byte forms name one value; the value is what must come back.
            self.assertEqual(f.decode(f.encode(value)), value)
            return
        if value is None:
            return
        if name in ("A.21", "A.20", "A.15") or f.kind in ("time", "clock"):
            self.assertEqual(f.decode(f.encode(value)), value)
            return
        self.assertEqual(f.encode(value), raw, name)

    @given(st.sampled_from(["A.5", "A.6", "A.9", "A.25", "A.7", "A.11", "A.13", "A.14", "A.23",
                            "A.26"]), st.integers(0, 10**12), st.booleans())  # fmt: skip
    def test_numbers_round_trip(self, name: str, n: int, negative: bool) -> None:
        f = FORMATS[name]
        top = 10 ** (2 * f.size - (1 if f.kind == "signed" else 0))
        value = Decimal(n % top).scaleb(-f.decimals)
        if negative and f.kind == "signed":
            value = -value
        self.assertEqual(f.decode(f.encode(value)), value)
