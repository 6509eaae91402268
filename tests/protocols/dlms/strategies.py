"""Hypothesis strategies for DLMS values and APDUs, shared by the DLMS tests."""

from __future__ import annotations

from hypothesis import strategies as st

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

_INT_RANGES = {
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.BCD: (0, 255),
    DataType.INTEGER: (-128, 127),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.UNSIGNED: (0, 255),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 255),
}

byte_or_none = st.one_of(st.none(), st.integers(0, 254))
dates = st.builds(
    CosemDate,
    st.one_of(st.none(), st.integers(0, 0xFFFE)),
    byte_or_none,
    byte_or_none,
    byte_or_none,
)
times = st.builds(CosemTime, byte_or_none, byte_or_none, byte_or_none, byte_or_none)
date_times = st.builds(
    CosemDateTime,
    dates,
    times,
    st.one_of(st.none(), st.integers(-720, 720)),
    byte_or_none,
)


def _scalar(t: DataType) -> st.SearchStrategy[Data]:
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.integers(lo, hi).map(lambda v: Data(t, v))
    if t == DataType.FLOAT32:
        return st.floats(width=32, allow_nan=False).map(lambda v: Data(t, v))
    if t == DataType.FLOAT64:
        return st.floats(allow_nan=False).map(lambda v: Data(t, v))
    if t == DataType.BOOLEAN:
        return st.booleans().map(lambda v: Data(t, v))
    if t == DataType.OCTET_STRING:
        return st.binary(max_size=300).map(lambda v: Data(t, v))
    if t == DataType.VISIBLE_STRING:
        return st.text(st.characters(max_codepoint=255), max_size=40).map(lambda v: Data(t, v))
    if t == DataType.UTF8_STRING:
        return st.text(max_size=40).map(lambda v: Data(t, v))
    if t == DataType.BIT_STRING:
        return st.text("01", max_size=40).map(lambda v: Data(t, v))
    if t == DataType.DATE_TIME:
        return date_times.map(lambda v: Data(t, v))
    if t == DataType.DATE:
        return dates.map(lambda v: Data(t, v))
    if t == DataType.TIME:
        return times.map(lambda v: Data(t, v))
    return st.just(Data(t))


SCALAR_TYPES = [
    t for t in DataType if t not in (DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY)
]
scalars = st.sampled_from(SCALAR_TYPES).flatmap(_scalar)


def _containers(children: st.SearchStrategy[Data]) -> st.SearchStrategy[Data]:
    return st.one_of(
        st.lists(children, max_size=6).map(axdr.array),
        st.lists(children, max_size=6).map(lambda items: axdr.structure(*items)),
    )


data_values = st.recursive(scalars, _containers, max_leaves=30)

_COMPACT_SCALARS = [t for t in SCALAR_TYPES if t not in (DataType.NULL_DATA, DataType.DONT_CARE)]


@st.composite
def compact_arrays(draw: st.DrawFn) -> Data:
    """A compact-array of structures of simple types (how profile buffers are sent)."""
    columns = draw(st.lists(st.sampled_from(_COMPACT_SCALARS), min_size=1, max_size=5))
    desc = TypeDescription(DataType.STRUCTURE, tuple(TypeDescription(t) for t in columns))
    rows = draw(st.lists(st.tuples(*[_scalar(t) for t in columns]), max_size=8))
    elements = tuple(axdr.structure(*row) for row in rows)
    return Data(DataType.COMPACT_ARRAY, CompactArray(desc, elements))


# -- APDUs ------------------------------------------------------------------------------------

from fep.model import ObisCode  # noqa: E402
from fep.protocols.dlms import apdu as A  # noqa: E402

obis_codes = st.builds(ObisCode, *[st.integers(0, 255)] * 6)
invokes = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)
results = st.integers(0, 255)
attributes = st.builds(
    A.AttributeDescriptor, st.integers(0, 65535), obis_codes, st.integers(-128, 127)
)
selections = st.one_of(st.none(), st.builds(A.AccessSelection, st.integers(0, 255), data_values))
get_results = st.one_of(
    data_values.map(lambda d: A.GetResult(data=d)),
    results.map(lambda e: A.GetResult(error=e)),
)
date_time_or_none = st.one_of(st.none(), date_times)

apdus = st.one_of(
    st.builds(A.GetRequest, attributes, selections, invokes),
    st.builds(A.GetRequestNext, u32, invokes),
    st.builds(
        A.GetRequestWithList,
        st.lists(st.tuples(attributes, selections), max_size=4).map(tuple),
        invokes,
    ),
    st.builds(A.GetResponse, get_results, invokes),
    st.builds(A.GetResponseBlock, st.booleans(), u32, st.binary(max_size=300), st.none(), invokes),
    st.builds(A.GetResponseBlock, st.booleans(), u32, st.none(), results, invokes),
    st.builds(A.GetResponseWithList, st.lists(get_results, max_size=4).map(tuple), invokes),
    st.builds(A.SetRequest, attributes, data_values, selections, invokes),
    st.builds(
        A.SetRequestFirstBlock,
        attributes,
        st.booleans(),
        u32,
        st.binary(max_size=200),
        selections,
        invokes,
    ),
    st.builds(A.SetRequestBlock, st.booleans(), u32, st.binary(max_size=200), invokes),
    st.builds(A.SetResponse, results, invokes),
    st.builds(A.SetResponseBlock, u32, invokes),
    st.builds(A.SetResponseLastBlock, results, u32, invokes),
    st.builds(A.SetResponseWithList, st.lists(results, max_size=5).map(tuple), invokes),
    st.builds(
        A.ActionRequest,
        st.builds(A.MethodDescriptor, st.integers(0, 65535), obis_codes, st.integers(0, 255)),
        st.one_of(st.none(), data_values),
        invokes,
    ),
    st.builds(A.ActionResponse, results, st.one_of(st.none(), get_results), invokes),
    st.builds(A.DataNotification, data_values, date_time_or_none, u32, st.booleans()).filter(
        lambda n: n.date_time is not None or not n.tagged_date_time
    ),
    st.builds(A.EventNotification, attributes, data_values, date_time_or_none),
    st.builds(A.ExceptionResponseApdu, results, results, st.one_of(st.none(), u32)),
    st.builds(A.ConfirmedServiceErrorApdu, results, results, results),
    st.builds(
        A.GeneralBlockTransfer,
        st.booleans(),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.binary(max_size=200),
        st.booleans(),
        st.integers(0, 63),
    ),
)


# -- arrays of rows (what the A-XDR row templates read) -----------------------------------------

_ROW_SCALARS = [
    DataType.DOUBLE_LONG, DataType.DOUBLE_LONG_UNSIGNED, DataType.BCD, DataType.INTEGER,
    DataType.LONG, DataType.UNSIGNED, DataType.LONG_UNSIGNED, DataType.LONG64,
    DataType.LONG64_UNSIGNED, DataType.ENUM, DataType.FLOAT32, DataType.FLOAT64,
    DataType.BOOLEAN, DataType.NULL_DATA, DataType.OCTET_STRING, DataType.VISIBLE_STRING,
]
# A row's shape: scalar types (octet-strings with their length) as tuples, structures as lists.
_row_shapes = st.recursive(
    st.tuples(st.sampled_from(_ROW_SCALARS), st.integers(0, 14)),
    lambda children: st.lists(children, max_size=5),
    max_leaves=12,
)


def _row_of(shape: object) -> st.SearchStrategy[Data]:
    if isinstance(shape, tuple):
        t, length = shape
        if t == DataType.OCTET_STRING:
            return st.binary(min_size=length, max_size=length).map(lambda v: Data(t, v))
        return _scalar(t)
    assert isinstance(shape, list)
    return st.tuples(*[_row_of(child) for child in shape]).map(lambda items: axdr.structure(*items))


@st.composite
def row_arrays(draw: st.DrawFn) -> bytes:
    """The A-XDR bytes of an array of structures, most of one shape (a profile buffer, a
    push's register list), some rows of another, the bytes sometimes cut or one flipped."""
    shape = draw(_row_shapes.filter(lambda s: isinstance(s, list)))
    rows = st.one_of(_row_of(shape), _row_of(shape), _row_of(shape), data_values)
    raw = bytearray(axdr.encode(axdr.array(draw(st.lists(rows, max_size=12)))))
    mangle = draw(st.integers(0, 5))
    if mangle == 0:
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif mangle == 1:
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)
