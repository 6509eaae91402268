"""xDLMS APDUs of the LN referencing services (IEC 62056-5-3): GET, SET, ACTION with their
block-transfer forms, Data-Notification, Event-Notification, Exception-Response,
Confirmed-Service-Error and General-Block-Transfer, encoded and decoded both ways (client
and meter side).

ACSE APDUs (AARQ, AARE, RLRQ, RLRE) live in ``acse.py`` and ciphered ones in ``security.py``;
``decode_apdu`` refuses their tags with a FrameError naming them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TypeAlias

import attrs

from fep.errors import FrameError
from fep.model import ObisCode
from fep.protocols.dlms import axdr
from fep.protocols.dlms.axdr import CosemDateTime, Data, decode_length, encode_length


class Tag(enum.IntEnum):
    """First byte of the unciphered xDLMS APDUs this module handles."""

    CONFIRMED_SERVICE_ERROR = 0x0E
    DATA_NOTIFICATION = 0x0F
    GET_REQUEST = 0xC0
    SET_REQUEST = 0xC1
    EVENT_NOTIFICATION = 0xC2
    ACTION_REQUEST = 0xC3
    GET_RESPONSE = 0xC4
    SET_RESPONSE = 0xC5
    ACTION_RESPONSE = 0xC7
    EXCEPTION_RESPONSE = 0xD8
    GENERAL_BLOCK_TRANSFER = 0xE0


class DataAccessResult(enum.IntEnum):
    """Result of a GET or SET of one attribute (also the codes of Action-Result)."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


def result_name(code: int) -> str:
    """``object-undefined`` for 4; ``result 77`` for a code the standard does not name."""
    try:
        return DataAccessResult(code).name.lower().replace("_", "-")
    except ValueError:
        return f"result {code}"


class StateError(enum.IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(enum.IntEnum):
    """The service-error of an Exception-Response."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


# Invoke-Id-And-Priority: bits 0-3 invoke id, bit 6 confirmed, bit 7 high priority.
DEFAULT_INVOKE = 0xC1


# -- descriptors and access selection ----------------------------------------------------------


@attrs.frozen(slots=True)
class AttributeDescriptor:
    """A COSEM attribute: class id, logical name (OBIS), attribute index."""

    class_id: int
    instance: ObisCode
    attribute: int

    def __str__(self) -> str:
        return f"{self.class_id}/{self.instance}/{self.attribute}"


@attrs.frozen(slots=True)
class MethodDescriptor:
    """A COSEM method: class id, logical name, method index."""

    class_id: int
    instance: ObisCode
    method: int

    def __str__(self) -> str:
        return f"{self.class_id}/{self.instance}/m{self.method}"


@attrs.frozen(slots=True)
class AccessSelection:
    """Selective access: selector (1 by range, 2 by entry for profile generic) and its
    parameters as a COSEM value."""

    selector: int
    parameters: Data


CLOCK_TIME = (8, ObisCode.parse("0.0.1.0.0.255"), 2)


def range_selection(
    from_time: CosemDateTime,
    to_time: CosemDateTime,
    *,
    restricting: tuple[int, ObisCode, int] = CLOCK_TIME,
    columns: Sequence[tuple[int, ObisCode, int]] = (),
) -> AccessSelection:
    """Profile-generic selective access by range (selector 1) over the clock column."""
    class_id, instance, attribute = restricting
    capture = axdr.structure(
        axdr.long_unsigned(class_id),
        axdr.octet_string(instance.to_bytes()),
        axdr.integer(attribute),
        axdr.long_unsigned(0),
    )
    selected = axdr.array(
        axdr.structure(
            axdr.long_unsigned(c),
            axdr.octet_string(o.to_bytes()),
            axdr.integer(a),
            axdr.long_unsigned(0),
        )
        for c, o, a in columns
    )
    return AccessSelection(
        1,
        axdr.structure(capture, axdr.date_time(from_time), axdr.date_time(to_time), selected),
    )


def entry_selection(
    from_entry: int, to_entry: int = 0, from_column: int = 1, to_column: int = 0
) -> AccessSelection:
    """Profile-generic selective access by entry (selector 2); 0 means "to the last"."""
    return AccessSelection(
        2,
        axdr.structure(
            axdr.double_long_unsigned(from_entry),
            axdr.double_long_unsigned(to_entry),
            axdr.long_unsigned(from_column),
            axdr.long_unsigned(to_column),
        ),
    )


# -- APDUs ------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class GetRequest:
    """GET-Request-Normal."""

    attribute: AttributeDescriptor
    access: AccessSelection | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class GetRequestNext:
    block_number: int
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class GetRequestWithList:
    attributes: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class GetResult:
    """Get-Data-Result: the value, or the Data-Access-Result code when it failed."""

    data: Data | None = None
    error: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen(slots=True)
class GetResponse:
    """GET-Response-Normal."""

    result: GetResult
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class GetResponseBlock:
    """GET-Response-With-Datablock: one block of the A-XDR bytes of a long answer (``raw``),
    or the error that ended the transfer."""

    last: bool
    block_number: int
    raw: bytes | None = None
    error: int | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class GetResponseWithList:
    results: tuple[GetResult, ...]
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetRequest:
    """SET-Request-Normal."""

    attribute: AttributeDescriptor
    value: Data
    access: AccessSelection | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetRequestFirstBlock:
    """SET-Request-With-First-Datablock: the descriptor and the first block of the value's
    A-XDR bytes."""

    attribute: AttributeDescriptor
    last: bool
    block_number: int
    raw: bytes
    access: AccessSelection | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetRequestBlock:
    """SET-Request-With-Datablock: a following block."""

    last: bool
    block_number: int
    raw: bytes
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetRequestWithList:
    attributes: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]
    values: tuple[Data, ...]
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetResponse:
    """SET-Response-Normal."""

    result: int
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetResponseBlock:
    """SET-Response-Datablock: the meter took block ``block_number``."""

    block_number: int
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetResponseLastBlock:
    result: int
    block_number: int
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class SetResponseWithList:
    results: tuple[int, ...]
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class ActionRequest:
    """ACTION-Request-Normal."""

    method: MethodDescriptor
    parameters: Data | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class ActionResponse:
    """ACTION-Response-Normal: the action result and the optional return parameters."""

    result: int
    return_value: GetResult | None = None
    invoke: int = DEFAULT_INVOKE


@attrs.frozen(slots=True)
class DataNotification:
    """Data-Notification: an unsolicited push (long invoke id, optional date-time, body)."""

    body: Data
    date_time: CosemDateTime | None = None
    long_invoke: int = 0
    # The standard sends the date-time as an A-XDR octet-string (length 0C, or 00 when
    # absent). Many HAN meters (Kamstrup, Kaifa) send a tagged Data octet-string (09 0C)
    # instead; this keeps which form came in, so the APDU encodes back to the same bytes.
    tagged_date_time: bool = False


@attrs.frozen(slots=True)
class EventNotification:
    """Event-Notification-Request: one attribute value the meter reports on its own."""

    attribute: AttributeDescriptor
    value: Data
    time: CosemDateTime | None = None


@attrs.frozen(slots=True)
class ExceptionResponseApdu:
    state_error: int
    service_error: int
    # Present with invocation-counter-error: the counter the meter expects.
    invocation_counter: int | None = None

    def describe(self) -> str:
        try:
            state = StateError(self.state_error).name.lower().replace("_", "-")
        except ValueError:
            state = f"state-error {self.state_error}"
        try:
            service = ServiceError(self.service_error).name.lower().replace("_", "-")
        except ValueError:
            service = f"service-error {self.service_error}"
        return f"{state}, {service}"


# Confirmed-Service-Error (Green Book, xDLMS): the service it concerns, then the ServiceError
# CHOICE. One table for the APDU here and for the InitiateResponse refusal in acse.py.
CONFIRMED_SERVICES = {
    1: "initiate",
    2: "get-status",
    3: "get-name-list",
    4: "get-variable-attribute",
    5: "read",
    6: "write",
    7: "get-data-set-attribute",
    8: "get-ti-attribute",
    9: "change-scope",
    10: "start",
    11: "stop",
    12: "resume",
    13: "make-usable",
    14: "initiate-load",
    15: "load-segment",
    16: "terminate-load",
    17: "initiate-upload",
    18: "upload-segment",
    19: "terminate-upload",
}
# ServiceError CHOICE: its name and the names of its ENUMERATED values, by number.
SERVICE_ERROR_KINDS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: (
        "application-reference",
        (
            "other",
            "time-elapsed",
            "application-unreachable",
            "application-reference-invalid",
            "application-context-unsupported",
            "provider-communication-error",
            "deciphering-error",
        ),
    ),
    1: (
        "hardware-resource",
        (
            "other",
            "memory-unavailable",
            "processor-resource-unavailable",
            "mass-storage-unavailable",
            "other-resource-unavailable",
        ),
    ),
    2: (
        "vde-state-error",
        ("other", "no-dlms-context", "loading-data-set", "status-nochange", "status-inoperable"),
    ),
    3: ("service", ("other", "pdu-size", "service-unsupported")),
    4: (
        "definition",
        ("other", "object-undefined", "object-class-inconsistent", "object-attribute-inconsistent"),
    ),
    5: (
        "access",
        (
            "other",
            "scope-of-access-violated",
            "object-access-violated",
            "hardware-fault",
            "object-unavailable",
        ),
    ),
    6: (
        "initiate",
        (
            "other",
            "dlms-version-too-low",
            "incompatible-conformance",
            "pdu-size-too-short",
            "refused-by-the-VDE-Handler",
        ),
    ),
    7: ("load-data-set", ("other",)),
    8: ("change-scope", ("other",)),
    9: ("task", ("other",)),
    10: ("other", ()),
}


@attrs.frozen(slots=True)
class ConfirmedServiceErrorApdu:
    service: int
    error_kind: int
    error: int

    def describe(self) -> str:
        service = CONFIRMED_SERVICES.get(self.service, f"service {self.service}")
        kind, names = SERVICE_ERROR_KINDS.get(self.error_kind, (f"error {self.error_kind}", ()))
        name = names[self.error] if self.error < len(names) else str(self.error)
        return f"{service}: {kind} {name}"


@attrs.frozen(slots=True)
class GeneralBlockTransfer:
    """General-Block-Transfer: a block of a longer APDU, with acknowledgement numbers."""

    last: bool
    block_number: int
    block_number_ack: int
    data: bytes
    streaming: bool = False
    window: int = 1


Apdu: TypeAlias = (
    GetRequest
    | GetRequestNext
    | GetRequestWithList
    | GetResponse
    | GetResponseBlock
    | GetResponseWithList
    | SetRequest
    | SetRequestFirstBlock
    | SetRequestBlock
    | SetRequestWithList
    | SetResponse
    | SetResponseBlock
    | SetResponseLastBlock
    | SetResponseWithList
    | ActionRequest
    | ActionResponse
    | DataNotification
    | EventNotification
    | ExceptionResponseApdu
    | ConfirmedServiceErrorApdu
    | GeneralBlockTransfer
)


# -- encoding ---------------------------------------------------------------------------------


def _attr(out: bytearray, d: AttributeDescriptor) -> None:
    out += d.class_id.to_bytes(2, "big")
    out += d.instance.to_bytes()
    out += (d.attribute & 0xFF).to_bytes(1, "big")


def _selection(out: bytearray, access: AccessSelection | None) -> None:
    if access is None:
        out.append(0)
    else:
        out.append(1)
        out.append(access.selector)
        out += axdr.encode(access.parameters)


def _get_result(out: bytearray, result: GetResult) -> None:
    if result.data is not None:
        out.append(0)
        out += axdr.encode(result.data)
    else:
        out.append(1)
        out.append(result.error if result.error is not None else DataAccessResult.OTHER_REASON)


def _octets(out: bytearray, raw: bytes) -> None:
    out += encode_length(len(raw))
    out += raw


def encode_apdu(apdu: Apdu) -> bytes:
    """The bytes of one unciphered xDLMS APDU."""
    out = bytearray()
    if isinstance(apdu, GetRequest):
        out += bytes((Tag.GET_REQUEST, 1, apdu.invoke))
        _attr(out, apdu.attribute)
        _selection(out, apdu.access)
    elif isinstance(apdu, GetRequestNext):
        out += bytes((Tag.GET_REQUEST, 2, apdu.invoke))
        out += apdu.block_number.to_bytes(4, "big")
    elif isinstance(apdu, GetRequestWithList):
        out += bytes((Tag.GET_REQUEST, 3, apdu.invoke))
        out += encode_length(len(apdu.attributes))
        for descriptor, access in apdu.attributes:
            _attr(out, descriptor)
            _selection(out, access)
    elif isinstance(apdu, GetResponse):
        out += bytes((Tag.GET_RESPONSE, 1, apdu.invoke))
        _get_result(out, apdu.result)
    elif isinstance(apdu, GetResponseBlock):
        out += bytes((Tag.GET_RESPONSE, 2, apdu.invoke, 1 if apdu.last else 0))
        out += apdu.block_number.to_bytes(4, "big")
        if apdu.raw is not None:
            out.append(0)
            _octets(out, apdu.raw)
        else:
            out.append(1)
            out.append(apdu.error if apdu.error is not None else DataAccessResult.OTHER_REASON)
    elif isinstance(apdu, GetResponseWithList):
        out += bytes((Tag.GET_RESPONSE, 3, apdu.invoke))
        out += encode_length(len(apdu.results))
        for result in apdu.results:
            _get_result(out, result)
    elif isinstance(apdu, SetRequest):
        out += bytes((Tag.SET_REQUEST, 1, apdu.invoke))
        _attr(out, apdu.attribute)
        _selection(out, apdu.access)
        out += axdr.encode(apdu.value)
    elif isinstance(apdu, SetRequestFirstBlock):
        out += bytes((Tag.SET_REQUEST, 2, apdu.invoke))
        _attr(out, apdu.attribute)
        _selection(out, apdu.access)
        out.append(1 if apdu.last else 0)
        out += apdu.block_number.to_bytes(4, "big")
        _octets(out, apdu.raw)
    elif isinstance(apdu, SetRequestBlock):
        out += bytes((Tag.SET_REQUEST, 3, apdu.invoke, 1 if apdu.last else 0))
        out += apdu.block_number.to_bytes(4, "big")
        _octets(out, apdu.raw)
    elif isinstance(apdu, SetRequestWithList):
        out += bytes((Tag.SET_REQUEST, 4, apdu.invoke))
        out += encode_length(len(apdu.attributes))
        for descriptor, access in apdu.attributes:
            _attr(out, descriptor)
            _selection(out, access)
        out += encode_length(len(apdu.values))
        for value in apdu.values:
            out += axdr.encode(value)
    elif isinstance(apdu, SetResponse):
        out += bytes((Tag.SET_RESPONSE, 1, apdu.invoke, apdu.result))
    elif isinstance(apdu, SetResponseBlock):
        out += bytes((Tag.SET_RESPONSE, 2, apdu.invoke))
        out += apdu.block_number.to_bytes(4, "big")
    elif isinstance(apdu, SetResponseLastBlock):
        out += bytes((Tag.SET_RESPONSE, 3, apdu.invoke, apdu.result))
        out += apdu.block_number.to_bytes(4, "big")
    elif isinstance(apdu, SetResponseWithList):
        out += bytes((Tag.SET_RESPONSE, 5, apdu.invoke))
        out += encode_length(len(apdu.results))
        out += bytes(apdu.results)
    elif isinstance(apdu, ActionRequest):
        out += bytes((Tag.ACTION_REQUEST, 1, apdu.invoke))
        m = apdu.method
        out += m.class_id.to_bytes(2, "big") + m.instance.to_bytes() + bytes((m.method,))
        if apdu.parameters is None:
            out.append(0)
        else:
            out.append(1)
            out += axdr.encode(apdu.parameters)
    elif isinstance(apdu, ActionResponse):
        out += bytes((Tag.ACTION_RESPONSE, 1, apdu.invoke, apdu.result))
        if apdu.return_value is None:
            out.append(0)
        else:
            out.append(1)
            _get_result(out, apdu.return_value)
    elif isinstance(apdu, DataNotification):
        out.append(Tag.DATA_NOTIFICATION)
        out += apdu.long_invoke.to_bytes(4, "big")
        if apdu.date_time is None:
            out.append(0)
        else:
            out += (b"\x09\x0c" if apdu.tagged_date_time else b"\x0c") + apdu.date_time.encode()
        out += axdr.encode(apdu.body)
    elif isinstance(apdu, EventNotification):
        out.append(Tag.EVENT_NOTIFICATION)
        if apdu.time is None:
            out.append(0)
        else:
            out += b"\x01\x0c" + apdu.time.encode()
        _attr(out, apdu.attribute)
        out += axdr.encode(apdu.value)
    elif isinstance(apdu, ExceptionResponseApdu):
        out += bytes((Tag.EXCEPTION_RESPONSE, apdu.state_error, apdu.service_error))
        if apdu.invocation_counter is not None:
            out += apdu.invocation_counter.to_bytes(4, "big")
    elif isinstance(apdu, ConfirmedServiceErrorApdu):
        out += bytes((Tag.CONFIRMED_SERVICE_ERROR, apdu.service, apdu.error_kind, apdu.error))
    elif isinstance(apdu, GeneralBlockTransfer):
        control = (
            (0x80 if apdu.last else 0) | (0x40 if apdu.streaming else 0) | (apdu.window & 0x3F)
        )
        out += bytes((Tag.GENERAL_BLOCK_TRANSFER, control))
        out += apdu.block_number.to_bytes(2, "big") + apdu.block_number_ack.to_bytes(2, "big")
        _octets(out, apdu.data)
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"not an APDU: {apdu!r}")
    return bytes(out)


# -- decoding ---------------------------------------------------------------------------------


class _Reader:
    """Position in an APDU being decoded; every read checks the bounds."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def _need(self, n: int, field: str) -> None:
        if self.pos + n > len(self.buf):
            raise FrameError(f"{self.what}: {field} truncated", offset=self.pos, field=field)

    def u8(self, field: str) -> int:
        self._need(1, field)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def uint(self, n: int, field: str) -> int:
        self._need(n, field)
        value = int.from_bytes(self.buf[self.pos : self.pos + n], "big")
        self.pos += n
        return value

    def raw(self, n: int, field: str) -> bytes:
        self._need(n, field)
        value = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return value

    def octets(self, field: str) -> bytes:
        n, self.pos = decode_length(self.buf, self.pos, field)
        return self.raw(n, field)

    def length(self, field: str) -> int:
        n, self.pos = decode_length(self.buf, self.pos, field)
        if n > len(self.buf) - self.pos:
            raise FrameError(
                f"{self.what}: {field} count {n} exceeds the APDU", offset=self.pos, field=field
            )
        return n

    def data(self, field: str = "data") -> Data:
        value, self.pos = axdr.decode(self.buf, self.pos)
        return value

    def boolean(self, field: str) -> bool:
        return self.u8(field) != 0

    def attribute(self) -> AttributeDescriptor:
        class_id = self.uint(2, "class-id")
        instance = ObisCode.from_bytes(self.raw(6, "instance-id"))
        attribute = int.from_bytes(self.raw(1, "attribute-id"), "big", signed=True)
        return AttributeDescriptor(class_id, instance, attribute)

    def selection(self) -> AccessSelection | None:
        if not self.boolean("access-selection"):
            return None
        selector = self.u8("access-selector")
        return AccessSelection(selector, self.data("access-parameters"))

    def get_result(self) -> GetResult:
        choice = self.u8("get-data-result")
        if choice == 0:
            return GetResult(data=self.data())
        if choice == 1:
            return GetResult(error=self.u8("data-access-result"))
        raise FrameError(
            f"{self.what}: get-data-result choice {choice}",
            offset=self.pos - 1,
            field="get-data-result",
        )

    def date_time_octets(self, field: str) -> CosemDateTime:
        raw = self.octets(field)
        if len(raw) != 12:
            raise FrameError(
                f"{self.what}: {field} of {len(raw)} bytes", offset=self.pos, field=field
            )
        return CosemDateTime.decode(raw)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise FrameError(
                f"{self.what}: {len(self.buf) - self.pos} bytes after the APDU",
                offset=self.pos,
                field="trailing bytes",
            )


def _bad_choice(r: _Reader, choice: int) -> FrameError:
    return FrameError(f"{r.what}: unknown choice {choice}", offset=1, field="choice")


def _get_request(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice == 1:
        return GetRequest(r.attribute(), r.selection(), invoke)
    if choice == 2:
        return GetRequestNext(r.uint(4, "block-number"), invoke)
    if choice == 3:
        items = []
        for _ in range(r.length("attribute list")):
            items.append((r.attribute(), r.selection()))
        return GetRequestWithList(tuple(items), invoke)
    raise _bad_choice(r, choice)


def _get_response(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice == 1:
        return GetResponse(r.get_result(), invoke)
    if choice == 2:
        last = r.boolean("last-block")
        number = r.uint(4, "block-number")
        kind = r.u8("raw-data or data-access-result")
        if kind == 0:
            return GetResponseBlock(last, number, raw=r.octets("raw-data"), invoke=invoke)
        if kind == 1:
            return GetResponseBlock(last, number, error=r.u8("data-access-result"), invoke=invoke)
        raise FrameError(
            f"{r.what}: datablock result choice {kind}", offset=r.pos - 1, field="datablock result"
        )
    if choice == 3:
        results = tuple(r.get_result() for _ in range(r.length("result list")))
        return GetResponseWithList(results, invoke)
    raise _bad_choice(r, choice)


def _set_request(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice == 1:
        attribute = r.attribute()
        access = r.selection()
        return SetRequest(attribute, r.data("value"), access, invoke)
    if choice == 2:
        attribute = r.attribute()
        access = r.selection()
        last = r.boolean("last-block")
        number = r.uint(4, "block-number")
        return SetRequestFirstBlock(attribute, last, number, r.octets("raw-data"), access, invoke)
    if choice == 3:
        last = r.boolean("last-block")
        number = r.uint(4, "block-number")
        return SetRequestBlock(last, number, r.octets("raw-data"), invoke)
    if choice == 4:
        items = tuple((r.attribute(), r.selection()) for _ in range(r.length("attribute list")))
        values = tuple(r.data("value") for _ in range(r.length("value list")))
        return SetRequestWithList(items, values, invoke)
    raise _bad_choice(r, choice)


def _set_response(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice == 1:
        return SetResponse(r.u8("data-access-result"), invoke)
    if choice == 2:
        return SetResponseBlock(r.uint(4, "block-number"), invoke)
    if choice == 3:
        result = r.u8("data-access-result")
        return SetResponseLastBlock(result, r.uint(4, "block-number"), invoke)
    if choice == 5:
        return SetResponseWithList(
            tuple(r.u8("data-access-result") for _ in range(r.length("result list"))), invoke
        )
    raise _bad_choice(r, choice)


def _action_request(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice != 1:
        raise _bad_choice(r, choice)
    class_id = r.uint(2, "class-id")
    instance = ObisCode.from_bytes(r.raw(6, "instance-id"))
    method = r.u8("method-id")
    parameters = r.data("method-invocation-parameters") if r.boolean("parameters") else None
    return ActionRequest(MethodDescriptor(class_id, instance, method), parameters, invoke)


def _action_response(r: _Reader) -> Apdu:
    choice = r.u8("choice")
    invoke = r.u8("invoke-id")
    if choice != 1:
        raise _bad_choice(r, choice)
    result = r.u8("action-result")
    value = r.get_result() if r.boolean("return-parameters") else None
    return ActionResponse(result, value, invoke)


def _data_notification(r: _Reader) -> Apdu:
    long_invoke = r.uint(4, "long-invoke-id-and-priority")
    marker = r.u8("date-time")
    stamp: CosemDateTime | None = None
    tagged = False
    if marker == 0x09:
        # A tagged octet-string (HAN meters); a 9-byte date-time does not exist.
        stamp = r.date_time_octets("date-time")
        tagged = True
    elif marker == 0x0C:
        r.pos -= 1
        stamp = r.date_time_octets("date-time")
    elif marker != 0x00:
        raise FrameError(
            f"{r.what}: date-time length {marker:#04x}", offset=r.pos - 1, field="date-time"
        )
    return DataNotification(r.data("notification-body"), stamp, long_invoke, tagged)


def _event_notification(r: _Reader) -> Apdu:
    stamp = r.date_time_octets("time") if r.boolean("time") else None
    attribute = r.attribute()
    return EventNotification(attribute, r.data("attribute-value"), stamp)


def _exception_response(r: _Reader) -> Apdu:
    state = r.u8("state-error")
    service = r.u8("service-error")
    counter = r.uint(4, "invocation-counter") if r.pos + 4 <= len(r.buf) else None
    return ExceptionResponseApdu(state, service, counter)


def _confirmed_service_error(r: _Reader) -> Apdu:
    return ConfirmedServiceErrorApdu(r.u8("service"), r.u8("service-error"), r.u8("error"))


def _general_block_transfer(r: _Reader) -> Apdu:
    control = r.u8("block-control")
    number = r.uint(2, "block-number")
    ack = r.uint(2, "block-number-ack")
    return GeneralBlockTransfer(
        bool(control & 0x80),
        number,
        ack,
        r.octets("block-data"),
        bool(control & 0x40),
        control & 0x3F,
    )


_DECODERS: dict[int, tuple[str, Callable[[_Reader], Apdu]]] = {
    Tag.GET_REQUEST: ("get-request", _get_request),
    Tag.GET_RESPONSE: ("get-response", _get_response),
    Tag.SET_REQUEST: ("set-request", _set_request),
    Tag.SET_RESPONSE: ("set-response", _set_response),
    Tag.ACTION_REQUEST: ("action-request", _action_request),
    Tag.ACTION_RESPONSE: ("action-response", _action_response),
    Tag.DATA_NOTIFICATION: ("data-notification", _data_notification),
    Tag.EVENT_NOTIFICATION: ("event-notification", _event_notification),
    Tag.EXCEPTION_RESPONSE: ("exception-response", _exception_response),
    Tag.CONFIRMED_SERVICE_ERROR: ("confirmed-service-error", _confirmed_service_error),
    Tag.GENERAL_BLOCK_TRANSFER: ("general-block-transfer", _general_block_transfer),
}

_ACSE_TAGS = {0x60: "AARQ", 0x61: "AARE", 0x62: "RLRQ", 0x63: "RLRE"}


def decode_apdu(data: bytes) -> Apdu:
    """One unciphered xDLMS APDU filling ``data``.

    Raises FrameError for an empty, truncated or unknown APDU, an ACSE or ciphered tag, a
    bad choice, a list count over the bytes left, trailing bytes, or any A-XDR error of the
    values inside (see ``axdr.decode``). Work is linear in ``len(data)``."""
    if not data:
        raise FrameError("empty APDU", offset=0, field="tag")
    tag = data[0]
    entry = _DECODERS.get(tag)
    if entry is None:
        name = _ACSE_TAGS.get(tag)
        if name:
            raise FrameError(f"{name} is an ACSE APDU", offset=0, field="tag")
        if 0x21 <= tag <= 0xDF and tag not in _DECODERS:
            raise FrameError(
                f"APDU tag {tag:#04x} is ciphered or unsupported", offset=0, field="tag"
            )
        raise FrameError(f"unknown APDU tag {tag:#04x}", offset=0, field="tag")
    what, decoder = entry
    reader = _Reader(data, what)
    reader.pos = 1
    apdu = decoder(reader)
    reader.end()
    return apdu


def is_plain_service(tag: int) -> bool:
    """An unciphered GET/SET/ACTION request or response or notification: on a ciphered
    association these must arrive ciphered."""
    return tag in _DECODERS and tag not in (
        Tag.EXCEPTION_RESPONSE,
        Tag.CONFIRMED_SERVICE_ERROR,
        Tag.GENERAL_BLOCK_TRANSFER,
    )


def decode_get_results(raw: bytes) -> tuple[GetResult, ...]:
    """The count and Get-Data-Results of a long GET-with-list, reassembled from its blocks.
    Raises FrameError as ``decode_apdu`` does."""
    reader = _Reader(raw, "get-response-with-list blocks")
    results = tuple(reader.get_result() for _ in range(reader.length("result list")))
    reader.end()
    return results
