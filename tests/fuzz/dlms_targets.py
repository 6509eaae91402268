"""Fuzz targets of the DLMS/COSEM decoders (issue 14): one function per decoder entry point,
each feeding the bytes to it and catching exactly the errors it documents. Anything else
escaping is a bug the fuzzer reports. Sans-IO only: no Twisted, no I/O, fast.

``TARGETS`` maps a target name to its function; the seed corpus of each is
``tests/fuzz/corpus/<name>/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from fep.errors import FrameError
from fep.model import ObisCode
from fep.protocols.dlms import (
    acse,
    apdu,
    axdr,
    cosem,
    hdlc,
    push,
    pushframing,
    security,
    wrapper,
)
from fep.protocols.dlms.client import ClientSettings, DlmsClient
from fep.protocols.dlms.errors import (
    AssociationRefused,
    CipheringError,
    ConfirmedServiceError,
    DlmsError,
)

# Fixed test keys and titles (the Green Book's example keys): not secrets.
KEYS = security.SecurityKeys(
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
SERVER_TITLE = bytes.fromhex("4D4D4D0000BC614E")
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK_COLUMN = cosem.CaptureObject(8, ObisCode(0, 0, 1, 0, 0, 255), 2)


def _pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut where its first byte says (so the fuzzer also drives stream decoders
    fed in pieces): the first byte is the piece size (0 means all at once)."""
    if not data:
        return
    size = data[0] or len(data)
    rest = data[1:]
    for start in range(0, len(rest), size):
        yield rest[start : start + size]


def dlms_axdr(data: bytes) -> None:
    """axdr.decode_all: FrameError."""
    try:
        axdr.decode_all(data)
    except FrameError:
        pass


def dlms_apdu(data: bytes) -> None:
    """apdu.decode_apdu: FrameError."""
    try:
        apdu.decode_apdu(data)
    except FrameError:
        pass


def dlms_get_results(data: bytes) -> None:
    """apdu.decode_get_results (a reassembled long GET-with-list): FrameError."""
    try:
        apdu.decode_get_results(data)
    except FrameError:
        pass


def dlms_acse(data: bytes) -> None:
    """acse.decode_acse, then check_aare on an AARE: FrameError, AssociationRefused."""
    try:
        decoded = acse.decode_acse(data)
    except FrameError:
        return
    if isinstance(decoded, acse.Aare):
        try:
            acse.check_aare(decoded)
        except AssociationRefused:
            pass


def dlms_initiate(data: bytes) -> None:
    """InitiateRequest.decode, decode_initiate_response, ServiceError.decode: FrameError,
    and InitiateRefused (a ConfirmedServiceError) for a Confirmed-Service-Error."""
    for decode in (acse.InitiateRequest.decode, acse.ServiceError.decode):
        try:
            decode(data)
        except FrameError:
            pass
    try:
        acse.decode_initiate_response(data)
    except (FrameError, ConfirmedServiceError):
        pass


def dlms_wrapper_stream(data: bytes) -> None:
    """WrapperDecoder.receive fed in pieces: FrameError (decoding goes on after it)."""
    decoder = wrapper.WrapperDecoder()
    for piece in _pieces(data):
        while True:
            try:
                frames = decoder.receive(piece)
            except FrameError:
                piece = b""
                continue
            piece = b""
            if not frames:
                break


def dlms_hdlc_frame(data: bytes) -> None:
    """hdlc.decode_frame: FrameError."""
    try:
        hdlc.decode_frame(data)
    except FrameError:
        pass


def dlms_hdlc_stream(data: bytes) -> None:
    """HdlcFrameDecoder.receive fed in pieces: FrameError (decoding goes on after it)."""
    decoder = hdlc.HdlcFrameDecoder()
    for piece in _pieces(data):
        while True:
            try:
                frames = decoder.receive(piece)
            except FrameError:
                piece = b""
                continue
            piece = b""
            if not frames:
                break


def dlms_hdlc_parameters(data: bytes) -> None:
    """hdlc.decode_parameters (SNRM/UA information field): FrameError."""
    try:
        hdlc.decode_parameters(data)
    except FrameError:
        pass


def dlms_hdlc_link(data: bytes) -> None:
    """A connected HdlcClientLink's receive_data (reassembly, N(R), UI pushes): FrameError."""
    link = hdlc.HdlcClientLink(hdlc.HdlcAddress(16), hdlc.HdlcAddress(1, 17))
    link.connect()
    link.receive_data(hdlc.encode_frame(hdlc.HdlcFrame(
        hdlc.FrameKind.UA, hdlc.HdlcAddress(16), hdlc.HdlcAddress(1, 17))))
    for piece in _pieces(data):
        try:
            link.receive_data(piece)
        except FrameError:
            pass


def dlms_push(data: bytes) -> None:
    """A pushed APDU: decode_apdu, then logical_device_name and decode_push of a
    Data-Notification: FrameError."""
    try:
        message = apdu.decode_apdu(data)
        if isinstance(message, apdu.DataNotification):
            push.logical_device_name(message)
            push.decode_push("fuzz", message, received=RECEIVED)
            push.decode_push("fuzz", message, default_deviation=-60)
    except FrameError:
        pass


def dlms_push_stream(data: bytes) -> None:
    """pushframing.PushStream fed in pieces (framing detected, HDLC segments joined, bounded
    reassembly), each pushed APDU through decode_apdu and decode_push with the shipped
    layouts: FrameError from those; the stream itself raises nothing."""
    stream = pushframing.PushStream()
    items: list[pushframing.PushItem] = []
    for piece in _pieces(data):
        items += stream.receive(piece)
        if stream.buffered > pushframing.MAX_PUSH_APDU + 3 * 0x800 + 0x10000:
            raise AssertionError(f"push stream holds {stream.buffered} bytes")
    items += stream.close()
    for item in items:
        if isinstance(item, pushframing.PushedApdu):
            try:
                message = apdu.decode_apdu(item.apdu)
                if isinstance(message, apdu.DataNotification):
                    push.decode_push("fuzz", message, default_deviation=-60)
            except FrameError:
                pass


def dlms_security_unwrap(data: bytes) -> None:
    """security.decipher_apdu with fixed test keys (general and service-specific ciphering)
    and general_system_title: CipheringError (also for malformed headers), FrameError from
    general_system_title; a deciphered APDU then goes to decode_apdu (FrameError)."""
    try:
        security.general_system_title(data)
    except FrameError:
        pass
    for required in (True, False):
        try:
            inner = security.decipher_apdu(
                data, keys=KEYS, system_title=SERVER_TITLE, require_authentication=required
            )
        except CipheringError:
            continue
        try:
            apdu.decode_apdu(inner.plain_apdu)
        except FrameError:
            pass


def dlms_cosem_values(data: bytes) -> None:
    """An A-XDR value read as each COSEM attribute fep interprets (object list, capture
    objects, scaler_unit, register value, profile buffer, event log): FrameError."""
    try:
        value = axdr.decode_all(data)
    except FrameError:
        return
    for interpret in (cosem.decode_object_list, cosem.decode_capture_objects):
        try:
            interpret(value)
        except FrameError:
            pass
    try:
        scaler_unit = cosem.ScalerUnit.from_data(value)
    except FrameError:
        scaler_unit = cosem.ScalerUnit(-1, None)
    try:
        cosem.register_reading("fuzz", ObisCode(1, 0, 1, 8, 0, 255), value, scaler_unit)
    except FrameError:
        pass
    if value.type == axdr.DataType.STRUCTURE and len(value) == 2:
        try:
            cosem.register_reading("fuzz", ObisCode(1, 0, 1, 8, 0, 255), value[0],
                                   cosem.ScalerUnit.from_data(value[1]))
        except FrameError:
            pass
    value_column = cosem.CaptureObject(3, ObisCode(1, 0, 1, 8, 0, 255), 2)
    status_column = cosem.CaptureObject(1, ObisCode(0, 0, 96, 10, 1, 255), 2)
    for columns, period in (
        ((CLOCK_COLUMN, value_column), 900),
        ((CLOCK_COLUMN, status_column, value_column), 86400),
    ):
        try:
            cosem.profile_blocks("fuzz", value, columns, period, {
                value_column.logical_name: scaler_unit})
        except FrameError:
            pass
    try:
        cosem.event_log("fuzz", value, (CLOCK_COLUMN, value_column),
                        ObisCode(0, 0, 99, 98, 0, 255), default_deviation=-60)
    except FrameError:
        pass
    try:
        stamp = axdr.as_datetime(value)
    except FrameError:
        return
    stamp.to_datetime()
    stamp.to_datetime(-32768)
    stamp.local_zone()
    cosem.clock_quality(stamp)


# The Green Book AARE (LN, no security, conformance 00501F, max PDU 01F4).
GREEN_BOOK_AARE = bytes.fromhex(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"
)
ENERGY = apdu.AttributeDescriptor(3, ObisCode(1, 0, 1, 8, 0, 255), 2)
DISCONNECT = apdu.MethodDescriptor(70, ObisCode(0, 0, 96, 3, 10, 255), 1)


def dlms_client_receive(data: bytes) -> None:
    """A DlmsClient's receive, as the session drives it: an AARE (when the input starts
    with 61), or answers to a GET, GET-with-list, SET or ACTION (chosen by the first byte)
    fed in pieces, until the first error: DlmsError (its subclasses) or FrameError."""
    client = DlmsClient(ClientSettings(meter="fuzz"))
    client.associate()
    try:
        if data[:1] == b"\x61":
            client.receive(data)
            return
        client.receive(GREEN_BOOK_AARE)
        if not data:
            return
        choice = data[0] % 4
        if choice == 0:
            client.get(ENERGY)
        elif choice == 1:
            client.get_with_list([(ENERGY, None), (ENERGY, None)])
        elif choice == 2:
            client.set(ENERGY, axdr.octet_string(bytes(2000)))
        else:
            client.action(DISCONNECT, axdr.integer(0))
        for piece in _pieces(data[1:]):
            client.receive(piece)
    except (DlmsError, FrameError):
        pass


def dlms_gprs_identify(data: bytes) -> None:
    """The GPRS listener's DLMS identification rules (before login) on a wrapper or HDLC
    stream (``dlms``, ``dlms-hdlc``): returns a match or nothing, raises nothing."""
    from fep.channels.identify import DlmsHdlcRule, DlmsRule

    for rule in (DlmsRule(), DlmsHdlcRule()):
        rule.scan(data)
        if data:
            rule.identify_apdu(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    f.__name__: f
    for f in (
        dlms_axdr,
        dlms_apdu,
        dlms_get_results,
        dlms_acse,
        dlms_initiate,
        dlms_wrapper_stream,
        dlms_hdlc_frame,
        dlms_hdlc_stream,
        dlms_hdlc_parameters,
        dlms_hdlc_link,
        dlms_push,
        dlms_push_stream,
        dlms_security_unwrap,
        dlms_cosem_values,
        dlms_client_receive,
        dlms_gprs_identify,
    )
}
