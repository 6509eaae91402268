"""Issue 14: every DLMS decoder, given any bytes, gives a value or one of the errors it
documents, quickly; the fuzz targets (tests/fuzz/dlms_targets.py) say which errors each may
raise, and their seed corpus (with every escape found so far) replays clean."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms import acse, apdu, axdr
from tests.fuzz.dlms_targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"

# Bytes that look like DLMS more often than uniform noise does: tags, lengths and the
# values that make counts and lengths big.
_DLMS_BYTES = st.lists(
    st.one_of(
        st.integers(0, 255),
        st.sampled_from([0x00, 0x01, 0x02, 0x09, 0x0F, 0x13, 0x7E, 0x80, 0x84, 0x88, 0xA0,
                         0xC4, 0xDB, 0xE6, 0xFF]),
    ),
    max_size=300,
).map(bytes)


class AnyBytesTests(unittest.TestCase):
    """Each target with arbitrary bytes: only documented errors, a generous time limit per
    example (hostile inputs used to take minutes)."""

    @settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(sorted(TARGETS)), st.one_of(st.binary(max_size=300), _DLMS_BYTES))
    def test_any_bytes_give_a_value_or_a_documented_error(self, name: str, data: bytes) -> None:
        TARGETS[name](data)


class CorpusReplayTests(unittest.TestCase):
    def test_every_target_has_a_seed_corpus(self) -> None:
        for name in TARGETS:
            with self.subTest(name):
                seeds = [p for p in (CORPUS / name).iterdir() if p.name != "SOURCES"]
                self.assertGreater(len(seeds), 0)

    def test_the_corpus_replays_clean(self) -> None:
        for name, target in sorted(TARGETS.items()):
            for seed in sorted((CORPUS / name).iterdir()):
                if seed.name != "SOURCES":
                    with self.subTest(target=name, seed=seed.name):
                        target(seed.read_bytes())


class IssueInputsTests(unittest.TestCase):
    """The inputs issue 14 names, each a typed error."""

    def test_compact_array_in_a_data_notification(self) -> None:
        with self.assertRaises(FrameError):
            apdu.decode_apdu(bytes.fromhex("0F000000010013020201FFFF01FFFF00110100"))

    def test_compact_array_alone(self) -> None:
        with self.assertRaises(FrameError):
            axdr.decode_all(bytes.fromhex("13020201FFFF01FFFF00110100"))

    def test_rlre_with_an_eight_byte_length(self) -> None:
        with self.assertRaises(FrameError):
            acse.decode_acse(bytes.fromhex("630380888888888888880100"))
