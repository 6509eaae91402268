"""A-XDR: every COSEM data type encodes and decodes, published bytes decode as published,
and arbitrary bytes give a value or a FrameError, never another exception."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms import axdr
from fep.protocols.dlms.axdr import (
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
)
from tests.protocols.dlms.fixtures import hex_fixture
from tests.protocols.dlms.strategies import compact_arrays, data_values, date_times, row_arrays
from tests.scale import examples


def _same(a: Data, b: Data) -> bool:
    """Equality that treats -0.0 and 0.0 floats by their bytes (the wire decides)."""
    return axdr.encode(a) == axdr.encode(b)


class PublishedBytesTests(unittest.TestCase):
    def test_kamstrup_han_push_body_decodes(self) -> None:
        frame = hex_fixture("kamstrup_han_list1.hex")
        apdu = frame[11:-3]  # after the HDLC header and LLC bytes, before FCS and flag
        self.assertEqual(apdu[0], 0x0F)  # data-notification
        stamp, pos = axdr.decode(apdu, 5)
        when = axdr.as_datetime(stamp)
        self.assertEqual(when.date, CosemDate(2017, 10, 20, 5))
        self.assertEqual(when.time, CosemTime(3, 43, 30, None))
        self.assertIsNone(when.deviation)
        body, end = axdr.decode(apdu, pos)
        self.assertEqual(end, len(apdu))
        self.assertEqual(body.type, DataType.STRUCTURE)
        self.assertEqual(len(body), 25)
        self.assertEqual(body[0], Data(DataType.VISIBLE_STRING, "Kamstrup_V0001"))
        self.assertEqual(body[1].value, bytes.fromhex("0101000005FF"))
        self.assertEqual(body[2].value, "5706567274389702")
        # 1-1:1.7.0 active power import, double-long-unsigned 1468 W
        self.assertEqual(body[5].value, bytes.fromhex("0101010700FF"))
        self.assertEqual(body[6], Data(DataType.DOUBLE_LONG_UNSIGNED, 1468))
        # 1-1:32.7.0 voltage L1, long-unsigned 232 V
        self.assertEqual(body[19].value, bytes.fromhex("0101200700FF"))
        self.assertEqual(body[20], Data(DataType.LONG_UNSIGNED, 232))
        self.assertEqual(axdr.encode(body), apdu[pos:])

    def test_register_scaler_unit(self) -> None:
        # structure { integer -1, enum 30 (Wh) }: the scaler_unit attribute of a register
        value = axdr.decode_all(bytes.fromhex("02020FFF161E"))
        self.assertEqual(value.native(), [-1, 30])

    def test_long_length_octet_string(self) -> None:
        raw = bytes(range(256)) * 2
        encoded = axdr.encode(axdr.octet_string(raw))
        self.assertEqual(encoded[:4], bytes.fromhex("09820200"))
        self.assertEqual(axdr.decode_all(encoded).value, raw)

    def test_bit_string_keeps_its_bit_count(self) -> None:
        encoded = bytes.fromhex("040BA5C0")
        value = axdr.decode_all(encoded)
        self.assertEqual(value.value, "10100101110")
        self.assertEqual(axdr.encode(value), encoded)

    def test_compact_array_of_structures(self) -> None:
        desc = TypeDescription(
            DataType.STRUCTURE,
            (TypeDescription(DataType.OCTET_STRING), TypeDescription(DataType.LONG_UNSIGNED)),
        )
        rows = (
            axdr.structure(axdr.octet_string(b"\x01\x02"), axdr.long_unsigned(7)),
            axdr.structure(axdr.octet_string(b""), axdr.long_unsigned(65535)),
        )
        value = Data(DataType.COMPACT_ARRAY, CompactArray(desc, rows))
        encoded = axdr.encode(value)
        # tag, description (structure of 2: octet-string, long-unsigned), contents length 8
        self.assertEqual(encoded.hex(), "130202091208020102000700ffff")
        self.assertEqual(axdr.decode_all(encoded), value)

    def test_date_time_to_utc_with_deviation(self) -> None:
        # 2024-03-01 13:00 local, deviation -60 (CET: UTC = local - 60 min)
        stamp = CosemDateTime(CosemDate(2024, 3, 1, 5), CosemTime(13, 0, 0, 0), -60, 0)
        self.assertEqual(stamp.to_datetime(), datetime(2024, 3, 1, 12, 0, tzinfo=UTC))
        back = CosemDateTime.from_datetime(datetime(2024, 3, 1, 12, 0, tzinfo=UTC), deviation=-60)
        self.assertEqual(back, stamp)

    def test_unspecified_date_time_has_no_instant(self) -> None:
        stamp = CosemDateTime.decode(bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF"))
        self.assertIsNone(stamp.date.year)
        self.assertIsNone(stamp.deviation)
        self.assertIsNone(stamp.to_datetime())
        self.assertEqual(stamp.encode().hex(), "ffffffffffffffffff8000ff")

    def test_every_scalar_type_has_a_tag(self) -> None:
        cases = {
            "0300": Data(DataType.BOOLEAN, False),
            "05FFFFFFFE": Data(DataType.DOUBLE_LONG, -2),
            "0600000100": Data(DataType.DOUBLE_LONG_UNSIGNED, 256),
            "0A026869": Data(DataType.VISIBLE_STRING, "hi"),
            "0C02C3A9": Data(DataType.UTF8_STRING, "é"),
            "0D12": Data(DataType.BCD, 0x12),
            "0F80": Data(DataType.INTEGER, -128),
            "10FF00": Data(DataType.LONG, -256),
            "11FF": Data(DataType.UNSIGNED, 255),
            "14FFFFFFFFFFFFFFFF": Data(DataType.LONG64, -1),
            "150000000000000001": Data(DataType.LONG64_UNSIGNED, 1),
            "1603": Data(DataType.ENUM, 3),
            "173FC00000": Data(DataType.FLOAT32, 1.5),
            "18BFF8000000000000": Data(DataType.FLOAT64, -1.5),
            "1A07E80301FF": Data(DataType.DATE, CosemDate(2024, 3, 1, None)),
            "1B0C1E00FF": Data(DataType.TIME, CosemTime(12, 30, 0, None)),
            "00": axdr.NULL,
            "FF": Data(DataType.DONT_CARE),
        }
        for hexed, value in cases.items():
            with self.subTest(hexed=hexed):
                self.assertEqual(axdr.decode_all(bytes.fromhex(hexed)), value)
                self.assertEqual(axdr.encode(value), bytes.fromhex(hexed))


class MalformedInputTests(unittest.TestCase):
    def test_unknown_tag_names_offset(self) -> None:
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(bytes.fromhex("020309000007"))
        self.assertEqual(caught.exception.offset, 5)  # 07 is no COSEM type
        self.assertEqual(caught.exception.field, "data type")

    def test_truncated_string(self) -> None:
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(bytes.fromhex("0905010203"))
        self.assertEqual(caught.exception.field, "octet-string")

    def test_deep_nesting_is_refused(self) -> None:
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(b"\x01\x01" * 200 + b"\x00")
        self.assertIn("nested too deep", str(caught.exception))

    def test_huge_array_count_fails_fast(self) -> None:
        with self.assertRaises(FrameError):
            axdr.decode_all(bytes.fromhex("0184FFFFFFFF00"))

    def test_compact_array_of_nulls_with_contents(self) -> None:
        with self.assertRaises(FrameError):
            axdr.decode_all(bytes.fromhex("13000300000000"))

    def test_compact_array_of_empty_nested_arrays_is_refused(self) -> None:
        # Issue 14: one element of {array 65535 of array 65535 of null-data, unsigned} is
        # 4 billion values from one byte of contents.
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(bytes.fromhex("13020201FFFF01FFFF00110100"))
        self.assertEqual(caught.exception.field, "compact-array")

    def test_compact_array_contents_shorter_than_one_element(self) -> None:
        # array of 65535 long-unsigned per element, 2 bytes of contents.
        with self.assertRaises(FrameError):
            axdr.decode_all(bytes.fromhex("1301FFFF12020001"))

    def test_compact_array_of_structures_with_a_few_nulls_decodes(self) -> None:
        desc = TypeDescription(
            DataType.STRUCTURE,
            (TypeDescription(DataType.NULL_DATA), TypeDescription(DataType.UNSIGNED)),
        )
        value = Data(
            DataType.COMPACT_ARRAY,
            CompactArray(
                desc,
                tuple(
                    axdr.structure(axdr.NULL, axdr.unsigned(n)) for n in range(100)
                ),
            ),
        )
        self.assertEqual(axdr.decode_all(axdr.encode(value)), value)

    def test_declared_counts_of_two_to_the_32_fail_fast(self) -> None:
        for hexed in ("0184FFFFFFFF0000", "0284FFFFFFFF0000", "0484FFFFFFFF00",
                      "0984FFFFFFFF00", "0A84FFFFFFFF00", "0C84FFFFFFFF00",
                      "0188FFFFFFFFFFFFFFFF00", "130184FFFF11FF"):
            with self.subTest(hexed=hexed), self.assertRaises(FrameError):
                axdr.decode_all(bytes.fromhex(hexed))

    def test_trailing_bytes(self) -> None:
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(bytes.fromhex("110100"))
        self.assertEqual(caught.exception.offset, 2)


class RoundTripTests(unittest.TestCase):
    @settings(max_examples=examples(400))
    @given(data_values)
    def test_every_value_round_trips(self, value: Data) -> None:
        encoded = axdr.encode(value)
        decoded = axdr.decode_all(encoded)
        self.assertTrue(_same(decoded, value))
        self.assertEqual(axdr.encode(decoded), encoded)

    @given(compact_arrays())
    def test_compact_arrays_round_trip(self, value: Data) -> None:
        encoded = axdr.encode(value)
        self.assertTrue(_same(axdr.decode_all(encoded), value))

    @settings(max_examples=1000)
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_give_a_value_or_frame_error(self, raw: bytes) -> None:
        try:
            value = axdr.decode_all(raw)
        except FrameError:
            return
        if value.type in (DataType.FLOAT32, DataType.FLOAT64) and math.isnan(value.value):
            return
        # Non-canonical input (boolean 02, long-form lengths, bit-string padding) decodes;
        # what it decodes to encodes canonically and decodes to the same value again.
        self.assertEqual(axdr.decode_all(axdr.encode(value)), value)

    @given(st.integers(0, 2**32 - 1))
    def test_length_round_trips(self, n: int) -> None:
        encoded = axdr.encode_length(n)
        self.assertEqual(axdr.decode_length(encoded, 0), (n, len(encoded)))


def _decoded(buf: bytes) -> object:
    try:
        data, end = axdr.decode(buf)
    except FrameError as e:
        return ("FrameError", str(e), e.offset, e.field)
    return (axdr.encode(data), repr(data), end)


class RowTemplateTests(unittest.TestCase):
    """Arrays of structures read through row templates give exactly what the general path
    gives: the same values, end and FrameError (message, offset, field)."""

    def _general(self, buf: bytes) -> object:
        self.patch(axdr, "_row_template", lambda buf, pos, depth: None)
        try:
            return _decoded(buf)
        finally:
            self.patch(axdr, "_row_template", _ROW_TEMPLATE)

    @settings(max_examples=examples(400))
    @given(row_arrays())
    def test_rows_agree_with_the_general_path(self, buf: bytes) -> None:
        self.assertEqual(_decoded(buf), self._general(buf), buf.hex())

    def test_profile_rows_use_the_template(self) -> None:
        row = axdr.structure(
            axdr.octet_string(bytes(12)), axdr.unsigned(8), axdr.double_long_unsigned(5), axdr.NULL
        )
        buf = axdr.encode(axdr.array([row] * 4))
        self.assertIsNotNone(axdr._row_template(buf, 2, 1))
        self.assertEqual(axdr.decode_all(buf), axdr.array([row] * 4))

    def test_a_different_row_goes_the_general_way(self) -> None:
        a = axdr.structure(axdr.unsigned(1), axdr.octet_string(b"ab"))
        b = axdr.structure(axdr.long_unsigned(1), axdr.octet_string(b"abc"))
        buf = axdr.encode(axdr.array([a, b, a]))
        self.assertEqual(axdr.decode_all(buf), axdr.array([a, b, a]))
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(buf[:-1])
        self.assertEqual(caught.exception.field, "octet-string")

    def test_rows_nested_too_deep_are_refused_as_before(self) -> None:
        inner = axdr.unsigned(1)
        for _ in range(axdr.MAX_DEPTH):
            inner = axdr.structure(inner)
            buf = axdr.encode(axdr.array([inner, inner]))
            self.assertEqual(_decoded(buf), self._general(buf))
        # The array is depth 0: its rows' innermost structure is at MAX_DEPTH.
        with self.assertRaises(FrameError) as caught:
            axdr.decode_all(buf)
        self.assertIn("nested too deep", str(caught.exception))


_ROW_TEMPLATE = axdr._row_template


class DateTimeFromOctetsTests(unittest.TestCase):
    @settings(max_examples=examples(2000))
    @given(
        st.one_of(
            st.binary(min_size=12, max_size=12),
            date_times.map(lambda d: d.encode()),
        ),
        st.one_of(st.none(), st.integers(-1500, 1500), st.integers(-(10**12), 10**12)),
    )
    def test_same_as_the_records(self, raw: bytes, default: int | None) -> None:
        self.assertEqual(
            CosemDateTime.datetime_from_octets(raw, default),
            CosemDateTime.decode(raw).to_datetime(default),
        )


class RowTemplateLimitTests(unittest.TestCase):
    def test_rows_of_more_than_64_values_go_the_general_way(self) -> None:
        wide = axdr.structure(*[axdr.unsigned(n) for n in range(axdr._MAX_ROW_VALUES + 2)])
        buf = axdr.encode(axdr.array([wide, wide]))
        self.assertIsNone(axdr._row_shape(buf, 2, 1))
        self.assertEqual(axdr.decode_all(buf), axdr.array([wide, wide]))
        narrow = axdr.structure(*[axdr.unsigned(n) for n in range(20)])
        buf = axdr.encode(axdr.array([narrow, narrow]))
        self.assertIsNotNone(axdr._row_shape(buf, 2, 1))


def _shapes_buffer(count: int) -> bytes:
    """An array of ``count`` arrays, each of two rows of a shape no other one has."""
    kinds = [axdr.unsigned(1), axdr.long_unsigned(2), axdr.double_long(3), axdr.NULL,
             axdr.octet_string(b"x"), axdr.boolean(True)]
    arrays = []
    for n in range(count):
        items, k = [], n + 1
        while k:
            k, digit = divmod(k, len(kinds))
            items.append(kinds[digit])
        arrays.append(axdr.array([axdr.structure(*items)] * 2))
    return axdr.encode(axdr.array(arrays))


class TemplateCompileCreditTests(unittest.TestCase):
    """Compiling a row template costs what decoding some KiB costs: it is paid from bytes
    decoded before, so ever new shapes cannot make decoding much slower than the general
    path (issue 14's bound: the work stays proportional to the bytes)."""

    def test_without_credit_nothing_is_compiled(self) -> None:
        self.patch(axdr, "_COMPILE_CREDIT", [0])
        self.patch(axdr, "_TEMPLATES", {})
        buf = _shapes_buffer(50)
        general = RowTemplateTests._general(self, buf)  # type: ignore[arg-type]
        self.assertEqual(_decoded(buf), general)
        self.assertEqual(axdr._TEMPLATES, {})

    def test_compiles_are_paid_from_decoded_bytes(self) -> None:
        self.patch(axdr, "_COMPILE_CREDIT", [3 * axdr._COMPILE_COST])
        self.patch(axdr, "_TEMPLATES", {})
        axdr.decode(_shapes_buffer(200))
        self.assertLessEqual(len(axdr._TEMPLATES), 3)
        self.assertGreater(len(axdr._TEMPLATES), 0)

    def test_credit_grows_with_decoded_bytes_up_to_a_cap(self) -> None:
        self.patch(axdr, "_COMPILE_CREDIT", [0])
        buf = axdr.encode(axdr.octet_string(bytes(1000)))
        axdr.decode_all(buf)
        self.assertEqual(axdr._COMPILE_CREDIT[0], len(buf))
        for _ in range(400):
            axdr.decode(buf)
        self.assertEqual(axdr._COMPILE_CREDIT[0], axdr._MAX_COMPILE_CREDIT)
