"""The records' wire form read back: anything but a record list is a RecordDecodeError (the
spool sets such a batch aside; no other exception may stop its recovery)."""

from __future__ import annotations

from twisted.trial import unittest

from fep.serialize import RecordDecodeError, decode_records

READING = (b'["R","m1","1-0:1.8.0*255",%s,null,0,null,"2024-01-01T00:00:00+00:00",0,"",""]')


class DecodeRecordsTests(unittest.TestCase):
    """Issue 14 (fuzzing the spool_records target): each of these escaped as another type."""

    def assertRefused(self, data: bytes) -> None:
        with self.assertRaises(RecordDecodeError):
            decode_records(data)

    def test_empty_record_is_refused(self) -> None:
        self.assertRefused(b"[[]]")  # IndexError before

    def test_a_string_in_place_of_a_record_is_refused(self) -> None:
        self.assertRefused(b'[""]')  # IndexError before

    def test_a_decimal_that_is_no_number_is_refused(self) -> None:
        self.assertRefused(b"[" + READING % b'["d","x"]' + b"]")  # decimal.InvalidOperation

    def test_a_period_out_of_range_is_refused(self) -> None:
        self.assertRefused(b'[["I","m1","1-0:1.8.0*255","2024-01-01T00:00:00+00:00",1e300,[],[],'
                           b'null,0,"2024-01-01T00:00:00+00:00",""]]')  # OverflowError

    def test_arrays_nested_too_deep_are_refused(self) -> None:
        self.assertRefused(b"[" * 100_000)  # RecursionError before

    def test_a_number_in_place_of_an_obis_code_is_refused(self) -> None:
        # Found by `make fuzz` (spool_records): AttributeError from ObisCode.parse.
        self.assertRefused(b'[["R","m2",900.0,["d","1"],null,0,null,'
                           b'"2024-01-01T00:00:00+00:00",0,"",null]]')

    def test_a_good_record_still_decodes(self) -> None:
        (reading,) = decode_records(b"[" + READING % b'["d","1.5"]' + b"]")
        self.assertEqual(str(reading.value), "1.5")
