"""The reworked push decoder (fep/protocols/dlms/push.py, issue 20) against the decoder it
replaced (push_reference.py): the same PushContent, or the same FrameError, for the
published captures, the fuzz corpus and generated lists of every shape the module reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import ObisCode
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr, pushframing
from fep.protocols.dlms.axdr import CosemDateTime, Data
from fep.protocols.dlms.layouts import EMPTY, LayoutTable, parse_layouts, shipped_layouts
from fep.protocols.dlms.push import PushContent, decode_push, logical_device_name
from tests.fuzz.dlms_targets import _pieces
from tests.fuzz.targets import corpus_files
from tests.protocols.dlms.push_reference import (
    reference_decode_push,
    reference_logical_device_name,
)
from tests.protocols.dlms.strategies import data_values, date_times, scalars
from tests.protocols.dlms.test_push_framing import PUBLISHED, notification
from tests.scale import examples

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
FILED = datetime(2000, 1, 1, tzinfo=UTC)

# Layouts with and without identifiers, units, scalers and date-times (besides the shipped).
EXTRA = parse_layouts("""
[three]
identifier = LIST3
items =
    1-0:1.8.0.255  kWh  -3
    0-0:1.0.0.255  date-time
    1-0:2.8.0.255
[bare]
items =
    1-0:1.7.0.255  W
    1-0:32.7.0.255  V  -1
[pairs]
identifier = PAIRS
items =
    1-0:1.8.0.255  Wh
    1-0:31.7.0.255  A  -2
    0-0:96.1.0.255
    1-0:99.1.0.255  date-time
""", "test")


def _outcome(call: Callable[[], object]) -> object:
    """What a decoder gives: its result with the records' receive times set aside (they
    are the clock's), or the FrameError it raises (type, text, field)."""
    try:
        result = call()
    except FrameError as e:
        return ("FrameError", str(e), e.field)
    if isinstance(result, PushContent):
        readings = tuple(attrs.evolve(r, received_time=FILED) for r in result.readings)
        events = tuple(attrs.evolve(e, received_time=FILED) for e in result.events)
        return attrs.evolve(result, readings=readings, events=events)
    return result


def _tables() -> list[LayoutTable | None]:
    return [None, EMPTY, LayoutTable(shipped_layouts().layouts + tuple(EXTRA))]


class Compare:
    def same(self, test: unittest.TestCase, message: A.DataNotification) -> None:
        for layouts in _tables():
            for deviation in (None, -60, 120):
                options = {"default_deviation": deviation, "received": RECEIVED,
                           "layouts": layouts}
                test.assertEqual(
                    _outcome(partial(decode_push, "m", message, **options)),
                    _outcome(partial(reference_decode_push, "m", message, **options)))
            test.assertEqual(
                _outcome(partial(logical_device_name, message, layouts)),
                _outcome(partial(reference_logical_device_name, message, layouts)))


class PublishedAndCorpusTests(unittest.TestCase, Compare):
    def test_published_captures(self) -> None:
        for name in PUBLISHED:
            self.same(self, notification(name))

    def test_the_push_corpus(self) -> None:
        compared = 0
        for path in corpus_files("dlms_push"):
            try:
                message = A.decode_apdu(path.read_bytes())
            except FrameError:
                continue
            if isinstance(message, A.DataNotification):
                self.same(self, message)
                compared += 1
        self.assertGreater(compared, 0)

    def test_the_push_stream_corpus(self) -> None:
        compared = 0
        for path in corpus_files("dlms_push_stream"):
            stream = pushframing.PushStream()
            items: list[pushframing.PushItem] = []
            for piece in _pieces(path.read_bytes()):
                items += stream.receive(piece)
            items += stream.close()
            for item in items:
                if not isinstance(item, pushframing.PushedApdu):
                    continue
                try:
                    message = A.decode_apdu(item.apdu)
                except FrameError:
                    continue
                if isinstance(message, A.DataNotification):
                    self.same(self, message)
                    compared += 1
        self.assertGreater(compared, 0)


# Logical names the decoder treats each its own way, and ordinary registers.
NAMES = [ObisCode.parse(c) for c in (
    "0-0:1.0.0.255", "0-1:1.0.0.255", "0-0:42.0.0.255", "0-0:96.1.0.255", "0-0:96.1.1.255",
    "1-1:0.0.5.255", "0-0:96.11.0.255", "0-0:96.11.4.255", "1-1:0.2.129.255",
    "1-0:0.2.129.255", "1-0:1.8.0.255", "1-0:2.8.0.255", "1-0:1.7.0.255", "1-0:32.7.0.255",
    "1-0:31.7.0.255", "1-0:3.8.0.255", "1-0:99.1.0.255", "1-0:14.7.0.255", "0-0:96.3.10.255",
)]
names = st.one_of(
    st.sampled_from(NAMES).map(lambda o: axdr.octet_string(o.to_bytes())),
    st.binary(min_size=5, max_size=7).map(axdr.octet_string),
    st.builds(lambda c: axdr.octet_string(c.to_bytes()),
              st.builds(ObisCode, *[st.integers(0, 255)] * 6)),
)
stamps = date_times.map(lambda d: axdr.octet_string(d.encode()))
values = st.one_of(
    st.builds(axdr.double_long_unsigned, st.integers(0, 2**32 - 1)),
    st.builds(axdr.long, st.integers(-(2**15), 2**15 - 1)),
    stamps, scalars, date_times.map(axdr.date_time),
    st.sampled_from(["KFM_001", "LIST3", "PAIRS", "Kamstrup_V0001", "AIDON_V0001"]).map(
        lambda t: axdr.visible_string(t)),
)
scaler_units = st.one_of(
    st.builds(lambda s, u: axdr.structure(axdr.integer(s), axdr.enum_value(u)),
              st.integers(-128, 127), st.sampled_from([27, 30, 33, 35, 255, 0, 7, 250])),
    data_values,
)
structures = st.builds(
    lambda name, value, rest: axdr.structure(name, value, *rest),
    names, values, st.lists(scaler_units, max_size=2),
)
bodies = st.one_of(
    st.lists(structures, max_size=8).map(axdr.array),
    st.lists(structures, max_size=8).map(lambda items: axdr.structure(*items)),
    st.lists(st.tuples(names, values), max_size=8).map(
        lambda pairs: axdr.structure(*[d for pair in pairs for d in pair])),
    st.tuples(values, st.lists(st.tuples(names, values), max_size=8)).map(
        lambda h: axdr.structure(h[0], *[d for pair in h[1] for d in pair])),
    st.lists(values, max_size=20).map(lambda items: axdr.structure(*items)),
    st.lists(st.one_of(values, names, structures), max_size=10).map(
        lambda items: axdr.structure(*items)),
    data_values,
)


class GeneratedListTests(unittest.TestCase, Compare):
    @settings(max_examples=examples(400), deadline=None)
    @given(bodies, st.one_of(st.none(), date_times))
    def test_any_list(self, body: Data, stamp: CosemDateTime | None) -> None:
        self.same(self, A.DataNotification(body, stamp))

    def test_a_kaifa_list_of_bare_values(self) -> None:
        # KFM_001 list 1 (one value: active power) by its identifier-free length.
        self.same(self, A.DataNotification(axdr.structure(axdr.double_long_unsigned(1103)),
                                           None))

    def test_units_of_gives_item_for(self) -> None:
        table = LayoutTable(shipped_layouts().layouts + tuple(EXTRA))
        identifiers = {layout.identifier for layout in table.layouts} | {"nothing"}
        for identifier in identifiers:
            units = table.units_of(identifier)
            for obis in NAMES + [i.obis for layout in table.layouts for i in layout.items]:
                self.assertEqual(units.get(obis), table.item_for(identifier, obis))


class SharedStateTests(unittest.TestCase):
    def test_a_push_s_integer_registers_share_one_received_time(self) -> None:
        for name in PUBLISHED:
            content = decode_push("m", notification(name), default_deviation=-60)
            numbers = [r for r in content.readings if isinstance(r.value, Decimal)]
            self.assertGreater(len(numbers), 0, name)
            self.assertEqual(len({r.received_time for r in numbers}), 1, name)

    def test_the_names_memo_is_bounded(self) -> None:
        from fep.protocols.dlms import push

        self.patch(push, "_NAMES", {})
        body = axdr.array([
            axdr.structure(axdr.octet_string(n.to_bytes(6, "big")), axdr.unsigned(1))
            for n in range(push._MAX_NAMES + 100)
        ])
        content = decode_push("m", A.DataNotification(body, None))
        self.assertEqual(len(content.readings), push._MAX_NAMES + 100)
        self.assertEqual(len(push._NAMES), push._MAX_NAMES)
        # The same list again: the names kept and the names not kept, decoded alike.
        self.assertEqual(_outcome(partial(decode_push, "m", A.DataNotification(body, None))),
                         _outcome(lambda: content))
