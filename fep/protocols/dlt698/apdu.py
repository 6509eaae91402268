"""DL/T 698.45 application layer: the APDUs of both directions, decoded and encoded
byte for byte.

Built: LINK-Request/Response (login, heartbeat, logout), CONNECT-Request/Response (no
security, general password, and the symmetric/signature mechanisms carried as bytes),
RELEASE-Request/Response/Notification, GET-Request/Response (Normal, NormalList, Record,
RecordList, Next), SET-Request/Response (Normal, NormalList), ACTION-Request/Response
(Normal, NormalList), REPORT-Notification (list, record list) and REPORT-Response,
PROXY-Request/Response (every kind: get list, get record, set, set-then-get, action,
action-then-get, transparent forwarding), ERROR-Response, SECURITY-Request
/Response (plaintext or ciphertext, every data verification choice; the ciphertext is
carried, never deciphered: fep has no ESAM).

Server APDUs end with FollowReport OPTIONAL and TimeTag OPTIONAL, client APDUs with TimeTag
OPTIONAL, LINK APDUs with neither; both are kept so encoding gives back the bytes decoded.
Decoding raises FrameError only (offset within the APDU), with work bounded by the length.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Final

import attrs

from fep.errors import FrameError
from fep.protocols.dlt698.data import (
    COMDCB,
    CSD,
    OAD,
    OMD,
    RSD,
    TI,
    Data,
    Reader,
    encode_data,
    encode_length,
    encode_rcsd,
    encode_rsd,
    encode_ti,
    encode_tsa,
    read_data,
    read_oad,
    read_omd,
    read_rcsd,
    read_rsd,
    read_ti,
    read_tsa,
)


class Tag(enum.IntEnum):
    LINK_REQUEST = 0x01
    CONNECT_REQUEST = 0x02
    RELEASE_REQUEST = 0x03
    GET_REQUEST = 0x05
    SET_REQUEST = 0x06
    ACTION_REQUEST = 0x07
    REPORT_RESPONSE = 0x08
    PROXY_REQUEST = 0x09
    SECURITY_REQUEST = 0x10
    LINK_RESPONSE = 0x81
    CONNECT_RESPONSE = 0x82
    RELEASE_RESPONSE = 0x83
    RELEASE_NOTIFICATION = 0x84
    GET_RESPONSE = 0x85
    SET_RESPONSE = 0x86
    ACTION_RESPONSE = 0x87
    REPORT_NOTIFICATION = 0x88
    PROXY_RESPONSE = 0x89
    SECURITY_RESPONSE = 0x90
    ERROR_RESPONSE = 0xEE


class LinkType(enum.IntEnum):
    LOGIN = 0
    HEARTBEAT = 1
    LOGOUT = 2


# DAR: the data access result codes (DL/T 698.45 table of DAR) fep names in messages.
DAR_TEXT: Final = {
    0: "success",
    1: "hardware fault",
    2: "temporary failure",
    3: "read/write refused",
    4: "object undefined",
    5: "object interface class mismatch",
    6: "object does not exist",
    7: "type mismatch",
    8: "out of range",
    9: "data block unavailable",
    10: "split transfer cancelled",
    11: "not in split transfer",
    12: "block write cancelled",
    13: "not in block write",
    14: "block number invalid",
    15: "password wrong / unauthorised",
    16: "baud rate cannot be changed",
    17: "year time zone count exceeded",
    18: "day period count exceeded",
    19: "tariff count exceeded",
    20: "security authentication mismatch",
    21: "duplicate top-up",
    22: "ESAM verification failed",
    23: "security authentication failed",
    24: "customer number mismatch",
    25: "top-up count error",
    26: "balance over hoarding limit",
    27: "address abnormal",
    28: "symmetric decryption error",
    29: "asymmetric decryption error",
    30: "signature error",
    31: "meter suspended",
    32: "time tag invalid",
    33: "request timed out",
    34: "ESAM P1P2 incorrect",
    35: "ESAM LC error",
    255: "other",
}


def dar_text(dar: int) -> str:
    return f"DAR {dar} ({DAR_TEXT.get(dar, 'unknown')})"


# ---------------------------------------------------------------------------
# Pieces shared by several APDUs
# ---------------------------------------------------------------------------

DateTime = tuple[int, ...]  # the 8 fields of date_time (year .. milliseconds)


@attrs.frozen
class TimeTag:
    """When a request was sent (date_time_s fields) and how long it stays valid."""

    sent: tuple[int, ...]
    valid: TI


@attrs.frozen
class ResultNormal:
    """A-ResultNormal: an attribute and its value, or the DAR refusing it."""

    oad: OAD
    data: Data | None = None
    dar: int | None = None


@attrs.frozen
class GetRecord:
    """One record read: the record object, the rows (RSD) and the columns (RCSD)."""

    oad: OAD
    rsd: RSD
    rcsd: tuple[CSD, ...] = ()


@attrs.frozen
class ResultRecord:
    """A-ResultRecord: the record object, its columns, and the rows (each one Data per
    column) or the DAR refusing them."""

    oad: OAD
    rcsd: tuple[CSD, ...]
    rows: tuple[tuple[Data, ...], ...] | None = None
    dar: int | None = None


@attrs.frozen
class FollowReport:
    """Reported data riding on a response: choice 1 results, 2 records."""

    results: tuple[ResultNormal, ...] = ()
    records: tuple[ResultRecord, ...] = ()


def _date_time(r: Reader, field: str) -> DateTime:
    return tuple(r.uint(n, field) for n in (2, 1, 1, 1, 1, 1, 1, 2))


def _encode_date_time(value: Sequence[int]) -> bytes:
    sizes = (2, 1, 1, 1, 1, 1, 1, 2)
    return b"".join(int(v).to_bytes(n, "big") for v, n in zip(value, sizes, strict=True))


def _read_time_tag(r: Reader) -> TimeTag | None:
    if not r.optional("TimeTag"):
        return None
    sent = tuple(r.uint(n, "TimeTag") for n in (2, 1, 1, 1, 1, 1))
    return TimeTag(sent, read_ti(r))


def _encode_time_tag(tag: TimeTag | None) -> bytes:
    if tag is None:
        return b"\x00"
    sizes = (2, 1, 1, 1, 1, 1)
    sent = b"".join(int(v).to_bytes(n, "big") for v, n in zip(tag.sent, sizes, strict=True))
    return b"\x01" + sent + encode_ti(tag.valid)


def _read_get_result(r: Reader, oad: OAD) -> ResultNormal:
    choice = r.byte("Get-Result")
    if choice == 0:
        return ResultNormal(oad, dar=r.byte("DAR"))
    if choice == 1:
        return ResultNormal(oad, data=read_data(r))
    raise r.error(f"Get-Result choice {choice}", "Get-Result", r.pos - 1)


def read_result_normal(r: Reader) -> ResultNormal:
    return _read_get_result(r, read_oad(r))


def encode_result_normal(result: ResultNormal) -> bytes:
    out = result.oad.encode()
    if result.data is not None:
        return out + b"\x01" + encode_data(result.data)
    return out + b"\x00" + bytes([result.dar if result.dar is not None else 255])


def read_result_record(r: Reader) -> ResultRecord:
    oad = read_oad(r)
    rcsd = read_rcsd(r)
    choice = r.byte("A-ResultRecord")
    if choice == 0:
        return ResultRecord(oad, rcsd, dar=r.byte("DAR"))
    if choice != 1:
        raise r.error(f"A-ResultRecord choice {choice}", "A-ResultRecord", r.pos - 1)
    columns = max(len(rcsd), 1)
    n = r.count("record rows", columns)
    rows = tuple(tuple(read_data(r) for _ in range(len(rcsd))) for _ in range(n))
    return ResultRecord(oad, rcsd, rows=rows)


def encode_result_record(result: ResultRecord) -> bytes:
    out = result.oad.encode() + encode_rcsd(result.rcsd)
    if result.rows is None:
        return out + b"\x00" + bytes([result.dar if result.dar is not None else 255])
    out += b"\x01" + encode_length(len(result.rows))
    for row in result.rows:
        if len(row) != len(result.rcsd):
            raise ValueError(f"a row of {len(row)} values for {len(result.rcsd)} columns")
        out += b"".join(encode_data(d) for d in row)
    return out


def _read_follow_report(r: Reader) -> FollowReport | None:
    if not r.optional("FollowReport"):
        return None
    choice = r.byte("FollowReport")
    if choice == 1:
        n = r.count("FollowReport", 5)
        return FollowReport(results=tuple(read_result_normal(r) for _ in range(n)))
    if choice == 2:
        n = r.count("FollowReport", 6)
        return FollowReport(records=tuple(read_result_record(r) for _ in range(n)))
    raise r.error(f"FollowReport choice {choice}", "FollowReport", r.pos - 1)


def _encode_follow_report(report: FollowReport | None) -> bytes:
    if report is None:
        return b"\x00"
    if report.records:
        return b"\x01\x02" + encode_length(len(report.records)) + b"".join(
            encode_result_record(x) for x in report.records)  # fmt: skip
    return b"\x01\x01" + encode_length(len(report.results)) + b"".join(
        encode_result_normal(x) for x in report.results)  # fmt: skip


def _read_get_record(r: Reader) -> GetRecord:
    return GetRecord(read_oad(r), read_rsd(r), read_rcsd(r))


def _encode_get_record(record: GetRecord) -> bytes:
    return record.oad.encode() + encode_rsd(record.rsd) + encode_rcsd(record.rcsd)


# ---------------------------------------------------------------------------
# APDUs
# ---------------------------------------------------------------------------


@attrs.frozen
class LinkRequest:
    """A server's login, heartbeat or logout (control function 1, server-started)."""

    piid_acd: int
    type: LinkType
    heartbeat: int
    time: DateTime


@attrs.frozen
class LinkResponse:
    """The client's answer: result (bit 7: the server's clock is trusted; bits 0-2: 0
    success, 1 address repeated, 2 illegal device, 3 capacity insufficient) and times."""

    piid: int
    result: int
    request_time: DateTime
    received_time: DateTime
    response_time: DateTime


@attrs.frozen
class ConnectRequest:
    """CONNECT-Request: protocol version, conformance blocks, the client's sizes, the
    association timeout and the authentication mechanism (0 none, 1 password with
    ``secret`` the visible string, 2 symmetric, 3 signature: ``secret`` their raw bytes)."""

    piid: int
    version: int = 0x0010
    protocol_conformance: bytes = b"\xff" * 8
    function_conformance: bytes = b"\xff" * 16
    send_max: int = 1024
    receive_max: int = 1024
    window: int = 1
    apdu_max: int = 1024
    timeout: int = 100
    mechanism: int = 0
    secret: bytes = b""
    time_tag: TimeTag | None = None


@attrs.frozen
class ConnectResponse:
    """CONNECT-Response: the server's factory version (32 bytes as sent), negotiated
    values, and the result (0 accepted, 1 password wrong, 2 symmetric decryption error,
    3 asymmetric, 4 signature, 5 version mismatch, 255 other)."""

    piid_acd: int
    factory: bytes
    version: int
    protocol_conformance: bytes
    function_conformance: bytes
    send_max: int
    receive_max: int
    window: int
    apdu_max: int
    timeout: int
    result: int
    security: bytes | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@attrs.frozen
class ReleaseRequest:
    piid: int
    time_tag: TimeTag | None = None


@attrs.frozen
class ReleaseResponse:
    piid_acd: int
    result: int = 0
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@attrs.frozen
class ReleaseNotification:
    piid_acd: int
    connected: DateTime
    now: DateTime
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


class GetKind(enum.IntEnum):
    NORMAL = 1
    NORMAL_LIST = 2
    RECORD = 3
    RECORD_LIST = 4
    NEXT = 5


@attrs.frozen
class GetRequest:
    """GET-Request: ``oads`` for Normal (one) and NormalList, ``records`` for Record (one)
    and RecordList, ``block`` (the last block received) for Next."""

    kind: GetKind
    piid: int
    oads: tuple[OAD, ...] = ()
    records: tuple[GetRecord, ...] = ()
    block: int = 0
    time_tag: TimeTag | None = None


@attrs.frozen
class GetResponse:
    """GET-Response: ``results`` (Normal: one, NormalList), ``records`` (Record: one,
    RecordList); Next: ``last`` block or not, ``block`` number, and the piece as results,
    records or ``dar``."""

    kind: GetKind
    piid_acd: int
    results: tuple[ResultNormal, ...] = ()
    records: tuple[ResultRecord, ...] = ()
    last: bool = True
    block: int = 0
    dar: int | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@attrs.frozen
class SetRequest:
    """SET-Request Normal (one pair) or NormalList: (OAD, Data) pairs."""

    piid: int
    values: tuple[tuple[OAD, Data], ...]
    list: bool = False
    time_tag: TimeTag | None = None


@attrs.frozen
class SetResponse:
    piid_acd: int
    results: tuple[tuple[OAD, int], ...]
    list: bool = False
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@attrs.frozen
class ActionRequest:
    """ACTION-Request Normal or NormalList: (OMD, parameter Data) pairs."""

    piid: int
    methods: tuple[tuple[OMD, Data], ...]
    list: bool = False
    time_tag: TimeTag | None = None


@attrs.frozen
class ActionResult:
    """A method's result; ``read``: in a PROXY ActionThenGet answer, the attribute read
    after it."""

    omd: OMD
    dar: int
    data: Data | None = None
    read: ResultNormal | None = None


@attrs.frozen
class ActionResponse:
    piid_acd: int
    results: tuple[ActionResult, ...]
    list: bool = False
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@attrs.frozen
class ReportNotification:
    """Data a server pushes: results (choice 1) or records (choice 2)."""

    piid_acd: int
    results: tuple[ResultNormal, ...] = ()
    records: tuple[ResultRecord, ...] = ()
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    @property
    def kind(self) -> int:
        return 2 if self.records else 1


@attrs.frozen
class ReportResponse:
    """The client's acknowledgement of a REPORT-Notification: the OADs it took."""

    piid: int
    oads: tuple[OAD, ...]
    kind: int = 1
    time_tag: TimeTag | None = None


@attrs.frozen
class ProxyTarget:
    """One meter behind a concentrator in a PROXY GetRequestList: its TSA (content bytes),
    its own timeout in seconds and the attributes asked of it."""

    tsa: bytes
    timeout: int
    oads: tuple[OAD, ...]


@attrs.frozen
class ProxyAction:
    """One meter behind a concentrator in a PROXY ActionRequestList: its TSA, its own
    timeout in seconds and the methods (OMD and parameter) asked of it; in an
    ActionThenGetRequestList (kind 6) ``then`` holds, per method, the attribute read after
    it and the delay (seconds) before."""

    tsa: bytes
    timeout: int
    methods: tuple[tuple[OMD, Data], ...]
    then: tuple[tuple[OAD, int], ...] = ()


@attrs.frozen
class ProxySet:
    """One meter behind a concentrator in a PROXY SetRequestList (kind 3): its TSA, its own
    timeout and the (OAD, value) pairs set; in a SetThenGetRequestList (kind 4) ``then``
    holds, for each pair, the attribute read after it and the delay (seconds) before."""

    tsa: bytes
    timeout: int
    values: tuple[tuple[OAD, Data], ...]
    then: tuple[tuple[OAD, int], ...] = ()


@attrs.frozen
class ProxySetResult:
    """One attribute set through PROXY: its DAR, and (kind 4) the attribute read after."""

    oad: OAD
    dar: int
    read: ResultNormal | None = None


@attrs.frozen
class ProxyTransparent:
    """PROXY TransCommandRequest (kind 7): ``command`` bytes sent as they are on the
    terminal's port ``port`` (an OAD of F2xx, e.g. F2010201 the first RS-485) with
    ``comdcb``, the answer awaited ``answer_timeout`` seconds, ``byte_timeout`` ms between
    its bytes."""

    port: OAD
    comdcb: COMDCB
    answer_timeout: int
    byte_timeout: int
    command: bytes


@attrs.frozen
class ProxyRequest:
    """PROXY-Request GetRequestList (kind 1: ``targets``), GetRequestRecord (kind 2:
    ``tsa`` and ``record``), SetRequestList (kind 3: ``sets``), SetThenGetRequestList (kind
    4: ``sets`` with ``then``), ActionRequestList (kind 5: ``actions``),
    ActionThenGetRequestList (kind 6: ``actions`` with ``then``) or TransCommandRequest
    (kind 7: ``transparent``; it has no overall timeout)."""

    kind: int
    piid: int
    timeout: int
    targets: tuple[ProxyTarget, ...] = ()
    tsa: bytes = b""
    record: GetRecord | None = None
    time_tag: TimeTag | None = None
    actions: tuple[ProxyAction, ...] = ()
    sets: tuple[ProxySet, ...] = ()
    transparent: ProxyTransparent | None = None


@attrs.frozen
class ProxyResponse:
    """PROXY-Response GetResponseList (kind 1: per meter, its results), GetResponseRecord
    (kind 2: one meter's record), SetResponseList and SetThenGetResponseList (kinds 3, 4:
    per meter, ``sets``), ActionResponseList and ActionThenGetResponseList (kinds 5, 6: per
    meter, its methods' results, with ``read`` in kind 6) or TransCommandResponse (kind 7:
    ``port`` and the answer ``command``, or ``dar``)."""

    kind: int
    piid_acd: int
    meters: tuple[tuple[bytes, tuple[ResultNormal, ...]], ...] = ()
    tsa: bytes = b""
    record: ResultRecord | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    actions: tuple[tuple[bytes, tuple[ActionResult, ...]], ...] = ()
    sets: tuple[tuple[bytes, tuple[ProxySetResult, ...]], ...] = ()
    port: OAD | None = None
    command: bytes | None = None
    dar: int | None = None


@attrs.frozen
class ErrorResponse:
    """The server could not take the APDU: 1 cannot parse, 2 service unsupported, 255
    other."""

    piid_acd: int
    kind: int
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


class Verification(enum.IntEnum):
    """The data verification choice of a SECURITY-Request."""

    SID_MAC = 0
    RN = 1
    RN_MAC = 2
    SID = 3


@attrs.frozen
class SecurityRequest:
    """SECURITY-Request: an APDU in plaintext (``ciphered`` False) or ESAM ciphertext, and
    its data verification: SID_MAC (``sid``, ``sid_data``, ``mac``), RN (``rn``), RN_MAC
    (``rn``, ``mac``) or SID (``sid``, ``sid_data``). fep builds the plaintext + RN kind
    only; the others are decoded and encoded, not deciphered."""

    data: bytes
    verification: Verification = Verification.RN
    ciphered: bool = False
    rn: bytes = b""
    mac: bytes = b""
    sid: int = 0
    sid_data: bytes = b""


@attrs.frozen
class SecurityResponse:
    """SECURITY-Response: the answer in plaintext (``ciphered`` False), ESAM ciphertext, or
    a DAR (``dar``: the meter refused the protected request), and its MAC when there is one
    (``sid``: verification choice SID_MAC instead of MAC)."""

    data: bytes = b""
    ciphered: bool = False
    dar: int | None = None
    mac: bytes | None = None
    sid: tuple[int, bytes] | None = None


Apdu = (
    LinkRequest | LinkResponse | ConnectRequest | ConnectResponse | ReleaseRequest
    | ReleaseResponse | ReleaseNotification | GetRequest | GetResponse | SetRequest
    | SetResponse | ActionRequest | ActionResponse | ReportNotification | ReportResponse
    | ProxyRequest | ProxyResponse | ErrorResponse | SecurityRequest | SecurityResponse
)  # fmt: skip


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def decode_apdu(raw: bytes) -> Apdu:
    """One whole APDU; FrameError for bytes that are none (or have bytes over)."""
    r = Reader(raw)
    at = 0
    tag = r.byte("APDU tag")
    apdu: Apdu
    if tag == Tag.LINK_REQUEST:
        piid = r.byte("PIID-ACD")
        kind = r.byte("link type")
        if kind > 2:
            raise r.error(f"link request type {kind}", "link type", r.pos - 1)
        apdu = LinkRequest(piid, LinkType(kind), r.uint(2, "heartbeat"), _date_time(r, "time"))
    elif tag == Tag.LINK_RESPONSE:
        apdu = LinkResponse(r.byte("PIID"), r.byte("result"), _date_time(r, "request time"),
                            _date_time(r, "received time"), _date_time(r, "response time"))
    elif tag == Tag.CONNECT_REQUEST:
        apdu = _read_connect_request(r)
    elif tag == Tag.CONNECT_RESPONSE:
        apdu = _read_connect_response(r)
    elif tag == Tag.RELEASE_REQUEST:
        apdu = ReleaseRequest(r.byte("PIID"), _read_time_tag(r))
    elif tag == Tag.RELEASE_RESPONSE:
        piid, result = r.byte("PIID-ACD"), r.byte("result")
        apdu = ReleaseResponse(piid, result, _read_follow_report(r), _read_time_tag(r))
    elif tag == Tag.RELEASE_NOTIFICATION:
        piid = r.byte("PIID-ACD")
        connected, now = _date_time(r, "connected"), _date_time(r, "now")
        apdu = ReleaseNotification(piid, connected, now, _read_follow_report(r),
                                   _read_time_tag(r))
    elif tag == Tag.GET_REQUEST:
        apdu = _read_get_request(r)
    elif tag == Tag.GET_RESPONSE:
        apdu = _read_get_response(r)
    elif tag == Tag.SET_REQUEST:
        apdu = _read_set_request(r)
    elif tag == Tag.SET_RESPONSE:
        apdu = _read_set_response(r)
    elif tag == Tag.ACTION_REQUEST:
        apdu = _read_action_request(r)
    elif tag == Tag.ACTION_RESPONSE:
        apdu = _read_action_response(r)
    elif tag == Tag.REPORT_NOTIFICATION:
        apdu = _read_report_notification(r)
    elif tag == Tag.REPORT_RESPONSE:
        kind = r.byte("REPORT-Response")
        if kind not in (1, 2):
            raise r.error(f"REPORT-Response choice {kind}", "REPORT-Response", r.pos - 1)
        piid = r.byte("PIID")
        n = r.count("OADs", 4)
        oads = tuple(read_oad(r) for _ in range(n))
        apdu = ReportResponse(piid, oads, kind, _read_time_tag(r))
    elif tag == Tag.PROXY_REQUEST:
        apdu = _read_proxy_request(r)
    elif tag == Tag.PROXY_RESPONSE:
        apdu = _read_proxy_response(r)
    elif tag == Tag.ERROR_RESPONSE:
        piid, kind = r.byte("PIID-ACD"), r.byte("error type")
        apdu = ErrorResponse(piid, kind, _read_follow_report(r), _read_time_tag(r))
    elif tag == Tag.SECURITY_REQUEST:
        apdu = _read_security_request(r)
    elif tag == Tag.SECURITY_RESPONSE:
        apdu = _read_security_response(r)
    else:
        raise FrameError(f"unknown APDU tag 0x{tag:02X}", offset=at, field="APDU tag")
    if r.left:
        raise r.error(f"{r.left} bytes after the APDU", "APDU")
    return apdu


def _read_connect_request(r: Reader) -> ConnectRequest:
    piid = r.byte("PIID")
    version = r.uint(2, "version")
    proto = r.take(8, "protocol conformance")
    func = r.take(16, "function conformance")
    send_max, recv_max = r.uint(2, "send max"), r.uint(2, "receive max")
    window, apdu_max = r.byte("window"), r.uint(2, "APDU max")
    timeout = r.uint(4, "timeout")
    mechanism = r.byte("ConnectMechanismInfo")
    secret = b""
    if mechanism == 1:
        secret = r.take(r.length("password"), "password")
    elif mechanism in (2, 3):
        start = r.pos
        for _ in range(2):
            r.take(r.length("security data"), "security data")
        secret = r.data[start : r.pos]
    elif mechanism != 0:
        raise r.error(f"ConnectMechanismInfo choice {mechanism}", "ConnectMechanismInfo",
                      r.pos - 1)  # fmt: skip
    return ConnectRequest(piid, version, proto, func, send_max, recv_max, window, apdu_max,
                          timeout, mechanism, secret, _read_time_tag(r))  # fmt: skip


def _read_connect_response(r: Reader) -> ConnectResponse:
    piid = r.byte("PIID-ACD")
    factory = r.take(32, "factory version")
    version = r.uint(2, "version")
    proto = r.take(8, "protocol conformance")
    func = r.take(16, "function conformance")
    send_max, recv_max = r.uint(2, "send max"), r.uint(2, "receive max")
    window, apdu_max = r.byte("window"), r.uint(2, "APDU max")
    timeout = r.uint(4, "timeout")
    result = r.byte("connect result")
    security = None
    if r.optional("SecurityData"):
        start = r.pos
        for _ in range(2):
            r.take(r.length("security data"), "security data")
        security = r.data[start : r.pos]
    return ConnectResponse(piid, factory, version, proto, func, send_max, recv_max, window,
                           apdu_max, timeout, result, security, _read_follow_report(r),
                           _read_time_tag(r))  # fmt: skip


def _read_get_request(r: Reader) -> GetRequest:
    at = r.pos
    kind = r.byte("GET-Request")
    piid = r.byte("PIID")
    if kind == GetKind.NORMAL:
        oads: tuple[OAD, ...] = (read_oad(r),)
        return GetRequest(GetKind.NORMAL, piid, oads, time_tag=_read_time_tag(r))
    if kind == GetKind.NORMAL_LIST:
        n = r.count("OADs", 4)
        oads = tuple(read_oad(r) for _ in range(n))
        return GetRequest(GetKind.NORMAL_LIST, piid, oads, time_tag=_read_time_tag(r))
    if kind == GetKind.RECORD:
        one = (_read_get_record(r),)
        return GetRequest(GetKind.RECORD, piid, records=one, time_tag=_read_time_tag(r))
    if kind == GetKind.RECORD_LIST:
        n = r.count("records", 6)
        records = tuple(_read_get_record(r) for _ in range(n))
        return GetRequest(GetKind.RECORD_LIST, piid, records=records,
                          time_tag=_read_time_tag(r))  # fmt: skip
    if kind == GetKind.NEXT:
        block = r.uint(2, "block")
        return GetRequest(GetKind.NEXT, piid, block=block, time_tag=_read_time_tag(r))
    raise r.error(f"GET-Request choice {kind}", "GET-Request", at)


def _read_get_response(r: Reader) -> GetResponse:
    at = r.pos
    kind = r.byte("GET-Response")
    piid = r.byte("PIID-ACD")
    results: tuple[ResultNormal, ...]
    records: tuple[ResultRecord, ...]
    if kind == GetKind.NORMAL:
        results = (read_result_normal(r),)
        return GetResponse(GetKind.NORMAL, piid, results, follow_report=_read_follow_report(r),
                           time_tag=_read_time_tag(r))  # fmt: skip
    if kind == GetKind.NORMAL_LIST:
        n = r.count("results", 6)
        results = tuple(read_result_normal(r) for _ in range(n))
        return GetResponse(GetKind.NORMAL_LIST, piid, results,
                           follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    if kind == GetKind.RECORD:
        records = (read_result_record(r),)
        return GetResponse(GetKind.RECORD, piid, records=records,
                           follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    if kind == GetKind.RECORD_LIST:
        n = r.count("records", 7)
        records = tuple(read_result_record(r) for _ in range(n))
        return GetResponse(GetKind.RECORD_LIST, piid, records=records,
                           follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    if kind == GetKind.NEXT:
        last = r.byte("last block") != 0
        block = r.uint(2, "block")
        choice = r.byte("GET-Response-Next")
        results, records = (), ()
        dar = None
        if choice == 0:
            dar = r.byte("DAR")
        elif choice == 1:
            n = r.count("results", 6)
            results = tuple(read_result_normal(r) for _ in range(n))
        elif choice == 2:
            n = r.count("records", 7)
            records = tuple(read_result_record(r) for _ in range(n))
        else:
            raise r.error(f"GET-Response-Next choice {choice}", "GET-Response-Next", r.pos - 1)
        return GetResponse(GetKind.NEXT, piid, results, records, last, block, dar,
                           _read_follow_report(r), _read_time_tag(r))  # fmt: skip
    raise r.error(f"GET-Response choice {kind}", "GET-Response", at)


def _read_set_request(r: Reader) -> SetRequest:
    kind = r.byte("SET-Request")
    piid = r.byte("PIID")
    if kind == 1:
        oad = read_oad(r)
        return SetRequest(piid, ((oad, read_data(r)),), False, _read_time_tag(r))
    if kind == 2:
        n = r.count("values", 5)
        values = []
        for _ in range(n):
            oad = read_oad(r)
            values.append((oad, read_data(r)))
        return SetRequest(piid, tuple(values), True, _read_time_tag(r))
    raise r.error(f"SET-Request choice {kind} not built", "SET-Request", r.pos - 2)


def _read_set_response(r: Reader) -> SetResponse:
    kind = r.byte("SET-Response")
    piid = r.byte("PIID-ACD")
    if kind == 1:
        oad = read_oad(r)
        results: tuple[tuple[OAD, int], ...] = ((oad, r.byte("DAR")),)
        return SetResponse(piid, results, False, _read_follow_report(r), _read_time_tag(r))
    if kind == 2:
        n = r.count("results", 5)
        out = []
        for _ in range(n):
            oad = read_oad(r)
            out.append((oad, r.byte("DAR")))
        return SetResponse(piid, tuple(out), True, _read_follow_report(r), _read_time_tag(r))
    raise r.error(f"SET-Response choice {kind} not built", "SET-Response", r.pos - 2)


def _read_action_request(r: Reader) -> ActionRequest:
    kind = r.byte("ACTION-Request")
    piid = r.byte("PIID")
    if kind not in (1, 2):
        raise r.error(f"ACTION-Request choice {kind} not built", "ACTION-Request", r.pos - 2)
    n = 1 if kind == 1 else r.count("methods", 5)
    methods = []
    for _ in range(n):
        omd = read_omd(r)
        methods.append((omd, read_data(r)))
    return ActionRequest(piid, tuple(methods), kind == 2, _read_time_tag(r))


def _read_action_result(r: Reader) -> ActionResult:
    omd = read_omd(r)
    dar = r.byte("DAR")
    data = read_data(r) if r.optional("action data") else None
    return ActionResult(omd, dar, data)


def _read_action_response(r: Reader) -> ActionResponse:
    kind = r.byte("ACTION-Response")
    piid = r.byte("PIID-ACD")
    if kind not in (1, 2):
        raise r.error(f"ACTION-Response choice {kind} not built", "ACTION-Response",
                      r.pos - 2)  # fmt: skip
    n = 1 if kind == 1 else r.count("results", 6)
    results = tuple(_read_action_result(r) for _ in range(n))
    return ActionResponse(piid, results, kind == 2, _read_follow_report(r), _read_time_tag(r))


def _read_report_notification(r: Reader) -> ReportNotification:
    kind = r.byte("REPORT-Notification")
    piid = r.byte("PIID-ACD")
    if kind == 1:
        n = r.count("results", 6)
        results = tuple(read_result_normal(r) for _ in range(n))
        return ReportNotification(piid, results, (), _read_follow_report(r), _read_time_tag(r))
    if kind == 2:
        n = r.count("records", 7)
        records = tuple(read_result_record(r) for _ in range(n))
        return ReportNotification(piid, (), records, _read_follow_report(r), _read_time_tag(r))
    raise r.error(f"REPORT-Notification choice {kind} not built", "REPORT-Notification",
                  r.pos - 2)  # fmt: skip


def _read_comdcb(r: Reader) -> COMDCB:
    return COMDCB(*r.take(5, "COMDCB"))


def _read_proxy_request(r: Reader) -> ProxyRequest:
    kind = r.byte("PROXY-Request")
    piid = r.byte("PIID")
    if kind == 7:
        port = read_oad(r)
        comdcb = _read_comdcb(r)
        answer, each = r.uint(2, "answer timeout"), r.uint(2, "byte timeout")
        command = r.take(r.length("command"), "command")
        return ProxyRequest(7, piid, 0, transparent=ProxyTransparent(
            port, comdcb, answer, each, command), time_tag=_read_time_tag(r))  # fmt: skip
    timeout = r.uint(2, "proxy timeout")
    if kind in (3, 4):
        n = r.count("proxy sets", 4)
        sets = []
        for _ in range(n):
            tsa = read_tsa(r)
            each = r.uint(2, "proxy timeout")
            m = r.count("values", 5 if kind == 3 else 10)
            values, then = [], []
            for _ in range(m):
                oad = read_oad(r)
                values.append((oad, read_data(r)))
                if kind == 4:
                    then.append((read_oad(r), r.byte("delay")))
            sets.append(ProxySet(tsa, each, tuple(values), tuple(then)))
        return ProxyRequest(kind, piid, timeout, sets=tuple(sets), time_tag=_read_time_tag(r))
    if kind == 1:
        n = r.count("proxy targets", 4)
        targets = []
        for _ in range(n):
            tsa = read_tsa(r)
            each = r.uint(2, "proxy timeout")
            m = r.count("OADs", 4)
            targets.append(ProxyTarget(tsa, each, tuple(read_oad(r) for _ in range(m))))
        return ProxyRequest(1, piid, timeout, tuple(targets), time_tag=_read_time_tag(r))
    if kind == 2:
        tsa = read_tsa(r)
        record = _read_get_record(r)
        return ProxyRequest(2, piid, timeout, tsa=tsa, record=record,
                            time_tag=_read_time_tag(r))  # fmt: skip
    if kind in (5, 6):
        n = r.count("proxy actions", 4)
        actions = []
        for _ in range(n):
            tsa = read_tsa(r)
            each = r.uint(2, "proxy timeout")
            m = r.count("methods", 5 if kind == 5 else 10)
            methods, reads = [], []
            for _ in range(m):
                omd = read_omd(r)
                methods.append((omd, read_data(r)))
                if kind == 6:
                    reads.append((read_oad(r), r.byte("delay")))
            actions.append(ProxyAction(tsa, each, tuple(methods), tuple(reads)))
        return ProxyRequest(kind, piid, timeout, actions=tuple(actions),
                            time_tag=_read_time_tag(r))  # fmt: skip
    raise r.error(f"PROXY-Request choice {kind} not built", "PROXY-Request", r.pos - 4)


def _read_proxy_response(r: Reader) -> ProxyResponse:
    kind = r.byte("PROXY-Response")
    piid = r.byte("PIID-ACD")
    if kind == 1:
        n = r.count("proxy results", 3)
        meters = []
        for _ in range(n):
            tsa = read_tsa(r)
            m = r.count("results", 5)
            meters.append((tsa, tuple(read_result_normal(r) for _ in range(m))))
        return ProxyResponse(1, piid, tuple(meters), follow_report=_read_follow_report(r),
                             time_tag=_read_time_tag(r))  # fmt: skip
    if kind == 2:
        tsa = read_tsa(r)
        record = read_result_record(r)
        return ProxyResponse(2, piid, tsa=tsa, record=record,
                             follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    if kind in (3, 4):
        n = r.count("proxy set results", 3)
        sets = []
        for _ in range(n):
            tsa = read_tsa(r)
            m = r.count("set results", 5 if kind == 3 else 11)
            results = []
            for _ in range(m):
                oad, dar = read_oad(r), r.byte("DAR")
                results.append(ProxySetResult(oad, dar, read_result_normal(r) if kind == 4
                                              else None))  # fmt: skip
            sets.append((tsa, tuple(results)))
        return ProxyResponse(kind, piid, sets=tuple(sets), follow_report=_read_follow_report(r),
                             time_tag=_read_time_tag(r))  # fmt: skip
    if kind in (5, 6):
        n = r.count("proxy action results", 3)
        answers = []
        for _ in range(n):
            tsa = read_tsa(r)
            m = r.count("action results", 6 if kind == 5 else 12)
            done = []
            for _ in range(m):
                result = _read_action_result(r)
                if kind == 6:
                    result = attrs.evolve(result, read=read_result_normal(r))
                done.append(result)
            answers.append((tsa, tuple(done)))
        return ProxyResponse(kind, piid, actions=tuple(answers),
                             follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    if kind == 7:
        port = read_oad(r)
        choice = r.byte("TransCommand result")
        if choice == 0:
            refused: int | None = r.byte("DAR")
            command = None
        elif choice == 1:
            refused, command = None, r.take(r.length("command"), "command")
        else:
            raise r.error(f"TransCommand result choice {choice}", "TransCommand result",
                          r.pos - 1)  # fmt: skip
        return ProxyResponse(7, piid, port=port, command=command, dar=refused,
                             follow_report=_read_follow_report(r), time_tag=_read_time_tag(r))
    raise r.error(f"PROXY-Response choice {kind} not built", "PROXY-Response", r.pos - 2)


def _octets(r: Reader, field: str) -> bytes:
    return r.take(r.length(field), field)


def _read_sid(r: Reader) -> tuple[int, bytes]:
    return r.uint(4, "SID identifier"), _octets(r, "SID data")


def _read_security_request(r: Reader) -> SecurityRequest:
    kind = r.byte("SECURITY-Request")
    if kind > 1:
        raise r.error(f"SECURITY-Request choice {kind}", "SECURITY-Request", r.pos - 1)
    data = _octets(r, "secured APDU")
    at = r.pos
    choice = r.byte("data verification")
    if choice == Verification.SID_MAC:
        sid, extra = _read_sid(r)
        return SecurityRequest(data, Verification.SID_MAC, kind == 1, mac=_octets(r, "MAC"),
                               sid=sid, sid_data=extra)  # fmt: skip
    if choice == Verification.RN:
        return SecurityRequest(data, Verification.RN, kind == 1, rn=_octets(r, "RN"))
    if choice == Verification.RN_MAC:
        rn = _octets(r, "RN")
        return SecurityRequest(data, Verification.RN_MAC, kind == 1, rn=rn,
                               mac=_octets(r, "MAC"))  # fmt: skip
    if choice == Verification.SID:
        sid, extra = _read_sid(r)
        return SecurityRequest(data, Verification.SID, kind == 1, sid=sid, sid_data=extra)
    raise r.error(f"data verification choice {choice}", "data verification", at)


def _read_security_response(r: Reader) -> SecurityResponse:
    kind = r.byte("SECURITY-Response")
    if kind == 2:
        response = SecurityResponse(dar=r.byte("DAR"))
    elif kind in (0, 1):
        response = SecurityResponse(_octets(r, "secured APDU"), kind == 1)
    else:
        raise r.error(f"SECURITY-Response choice {kind}", "SECURITY-Response", r.pos - 1)
    if r.optional("data verification"):
        at = r.pos
        choice = r.byte("data verification")
        if choice == 0:
            response = attrs.evolve(response, mac=_octets(r, "MAC"))
        elif choice == 1:
            sid = _read_sid(r)
            response = attrs.evolve(response, sid=sid, mac=_octets(r, "MAC"))
        else:
            raise r.error(f"data verification choice {choice}", "data verification", at)
    return response


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _server_trailer(apdu: Any) -> bytes:
    return _encode_follow_report(apdu.follow_report) + _encode_time_tag(apdu.time_tag)


def encode_apdu(apdu: Apdu) -> bytes:
    """The bytes of one APDU."""
    if isinstance(apdu, LinkRequest):
        return (bytes([Tag.LINK_REQUEST, apdu.piid_acd, apdu.type])
                + apdu.heartbeat.to_bytes(2, "big") + _encode_date_time(apdu.time))
    if isinstance(apdu, LinkResponse):
        return (bytes([Tag.LINK_RESPONSE, apdu.piid, apdu.result])
                + _encode_date_time(apdu.request_time) + _encode_date_time(apdu.received_time)
                + _encode_date_time(apdu.response_time))  # fmt: skip
    if isinstance(apdu, ConnectRequest):
        out = (bytes([Tag.CONNECT_REQUEST, apdu.piid]) + apdu.version.to_bytes(2, "big")
               + apdu.protocol_conformance + apdu.function_conformance
               + apdu.send_max.to_bytes(2, "big") + apdu.receive_max.to_bytes(2, "big")
               + bytes([apdu.window]) + apdu.apdu_max.to_bytes(2, "big")
               + apdu.timeout.to_bytes(4, "big") + bytes([apdu.mechanism]))  # fmt: skip
        if apdu.mechanism == 1:
            out += encode_length(len(apdu.secret)) + apdu.secret
        elif apdu.mechanism in (2, 3):
            out += apdu.secret
        return out + _encode_time_tag(apdu.time_tag)
    if isinstance(apdu, ConnectResponse):
        out = (bytes([Tag.CONNECT_RESPONSE, apdu.piid_acd]) + apdu.factory
               + apdu.version.to_bytes(2, "big") + apdu.protocol_conformance
               + apdu.function_conformance + apdu.send_max.to_bytes(2, "big")
               + apdu.receive_max.to_bytes(2, "big") + bytes([apdu.window])
               + apdu.apdu_max.to_bytes(2, "big") + apdu.timeout.to_bytes(4, "big")
               + bytes([apdu.result]))  # fmt: skip
        out += b"\x00" if apdu.security is None else b"\x01" + apdu.security
        return out + _server_trailer(apdu)
    if isinstance(apdu, ReleaseRequest):
        return bytes([Tag.RELEASE_REQUEST, apdu.piid]) + _encode_time_tag(apdu.time_tag)
    if isinstance(apdu, ReleaseResponse):
        return bytes([Tag.RELEASE_RESPONSE, apdu.piid_acd, apdu.result]) + _server_trailer(apdu)
    if isinstance(apdu, ReleaseNotification):
        return (bytes([Tag.RELEASE_NOTIFICATION, apdu.piid_acd])
                + _encode_date_time(apdu.connected) + _encode_date_time(apdu.now)
                + _server_trailer(apdu))  # fmt: skip
    if isinstance(apdu, GetRequest):
        return _encode_get_request(apdu)
    if isinstance(apdu, GetResponse):
        return _encode_get_response(apdu)
    if isinstance(apdu, SetRequest):
        out = bytes([Tag.SET_REQUEST, 2 if apdu.list else 1, apdu.piid])
        if apdu.list:
            out += encode_length(len(apdu.values))
        out += b"".join(oad.encode() + encode_data(d) for oad, d in apdu.values)
        return out + _encode_time_tag(apdu.time_tag)
    if isinstance(apdu, SetResponse):
        out = bytes([Tag.SET_RESPONSE, 2 if apdu.list else 1, apdu.piid_acd])
        if apdu.list:
            out += encode_length(len(apdu.results))
        out += b"".join(oad.encode() + bytes([dar]) for oad, dar in apdu.results)
        return out + _server_trailer(apdu)
    if isinstance(apdu, ActionRequest):
        out = bytes([Tag.ACTION_REQUEST, 2 if apdu.list else 1, apdu.piid])
        if apdu.list:
            out += encode_length(len(apdu.methods))
        out += b"".join(omd.encode() + encode_data(d) for omd, d in apdu.methods)
        return out + _encode_time_tag(apdu.time_tag)
    if isinstance(apdu, ActionResponse):
        out = bytes([Tag.ACTION_RESPONSE, 2 if apdu.list else 1, apdu.piid_acd])
        if apdu.list:
            out += encode_length(len(apdu.results))
        for result in apdu.results:
            out += _encode_action_result(result)
        return out + _server_trailer(apdu)
    if isinstance(apdu, ReportNotification):
        out = bytes([Tag.REPORT_NOTIFICATION, apdu.kind, apdu.piid_acd])
        if apdu.records:
            out += encode_length(len(apdu.records)) + b"".join(
                encode_result_record(x) for x in apdu.records)  # fmt: skip
        else:
            out += encode_length(len(apdu.results)) + b"".join(
                encode_result_normal(x) for x in apdu.results)  # fmt: skip
        return out + _server_trailer(apdu)
    if isinstance(apdu, ReportResponse):
        return (bytes([Tag.REPORT_RESPONSE, apdu.kind, apdu.piid])
                + encode_length(len(apdu.oads)) + b"".join(o.encode() for o in apdu.oads)
                + _encode_time_tag(apdu.time_tag))  # fmt: skip
    if isinstance(apdu, ProxyRequest):
        out = bytes([Tag.PROXY_REQUEST, apdu.kind, apdu.piid])
        if apdu.kind == 7:
            tr = apdu.transparent
            assert tr is not None
            c = tr.comdcb
            return (out + tr.port.encode() + bytes([c.baud, c.parity, c.data_bits, c.stop_bits,
                                                    c.flow])
                    + tr.answer_timeout.to_bytes(2, "big") + tr.byte_timeout.to_bytes(2, "big")
                    + _encode_octets(tr.command) + _encode_time_tag(apdu.time_tag))
        out += apdu.timeout.to_bytes(2, "big")
        if apdu.kind in (3, 4):
            out += encode_length(len(apdu.sets))
            for ps in apdu.sets:
                out += (encode_tsa(ps.tsa) + ps.timeout.to_bytes(2, "big")
                        + encode_length(len(ps.values)))
                for n, (oad, value) in enumerate(ps.values):
                    out += oad.encode() + encode_data(value)
                    if apdu.kind == 4:
                        read, delay = ps.then[n]
                        out += read.encode() + bytes([delay])
        elif apdu.kind == 1:
            out += encode_length(len(apdu.targets))
            for t in apdu.targets:
                out += (encode_tsa(t.tsa) + t.timeout.to_bytes(2, "big")
                        + encode_length(len(t.oads)) + b"".join(o.encode() for o in t.oads))
        elif apdu.kind in (5, 6):
            out += encode_length(len(apdu.actions))
            for a in apdu.actions:
                out += (encode_tsa(a.tsa) + a.timeout.to_bytes(2, "big")
                        + encode_length(len(a.methods)))
                for n, (omd, d) in enumerate(a.methods):
                    out += omd.encode() + encode_data(d)
                    if apdu.kind == 6:
                        read, delay = a.then[n]
                        out += read.encode() + bytes([delay])
        else:
            assert apdu.record is not None
            out += encode_tsa(apdu.tsa) + _encode_get_record(apdu.record)
        return out + _encode_time_tag(apdu.time_tag)
    if isinstance(apdu, ProxyResponse):
        out = bytes([Tag.PROXY_RESPONSE, apdu.kind, apdu.piid_acd])
        if apdu.kind == 1:
            out += encode_length(len(apdu.meters))
            for tsa, results in apdu.meters:
                out += encode_tsa(tsa) + encode_length(len(results)) + b"".join(
                    encode_result_normal(x) for x in results)  # fmt: skip
        elif apdu.kind in (5, 6):
            out += encode_length(len(apdu.actions))
            for tsa, done in apdu.actions:
                out += encode_tsa(tsa) + encode_length(len(done))
                for x in done:
                    out += _encode_action_result(x)
                    if apdu.kind == 6:
                        assert x.read is not None
                        out += encode_result_normal(x.read)
        elif apdu.kind in (3, 4):
            out += encode_length(len(apdu.sets))
            for tsa, set_results in apdu.sets:
                out += encode_tsa(tsa) + encode_length(len(set_results))
                for sr in set_results:
                    out += sr.oad.encode() + bytes([sr.dar])
                    if apdu.kind == 4:
                        assert sr.read is not None
                        out += encode_result_normal(sr.read)
        elif apdu.kind == 7:
            assert apdu.port is not None
            out += apdu.port.encode()
            if apdu.command is not None:
                out += b"\x01" + _encode_octets(apdu.command)
            else:
                out += bytes([0, apdu.dar if apdu.dar is not None else 255])
        else:
            assert apdu.record is not None
            out += encode_tsa(apdu.tsa) + encode_result_record(apdu.record)
        return out + _server_trailer(apdu)
    if isinstance(apdu, ErrorResponse):
        return bytes([Tag.ERROR_RESPONSE, apdu.piid_acd, apdu.kind]) + _server_trailer(apdu)
    if isinstance(apdu, SecurityRequest):
        out = (bytes([Tag.SECURITY_REQUEST, 1 if apdu.ciphered else 0])
               + _encode_octets(apdu.data) + bytes([apdu.verification]))
        sid = apdu.sid.to_bytes(4, "big") + _encode_octets(apdu.sid_data)
        if apdu.verification is Verification.SID_MAC:
            return out + sid + _encode_octets(apdu.mac)
        if apdu.verification is Verification.RN:
            return out + _encode_octets(apdu.rn)
        if apdu.verification is Verification.RN_MAC:
            return out + _encode_octets(apdu.rn) + _encode_octets(apdu.mac)
        return out + sid
    assert isinstance(apdu, SecurityResponse)
    if apdu.dar is not None:
        out = bytes([Tag.SECURITY_RESPONSE, 2, apdu.dar])
    else:
        out = (bytes([Tag.SECURITY_RESPONSE, 1 if apdu.ciphered else 0])
               + _encode_octets(apdu.data))
    if apdu.mac is None:
        return out + b"\x00"
    if apdu.sid is not None:
        return (out + b"\x01\x01" + apdu.sid[0].to_bytes(4, "big")
                + _encode_octets(apdu.sid[1]) + _encode_octets(apdu.mac))
    return out + b"\x01\x00" + _encode_octets(apdu.mac)


def _encode_octets(data: bytes) -> bytes:
    return encode_length(len(data)) + data


def _encode_action_result(result: ActionResult) -> bytes:
    out = result.omd.encode() + bytes([result.dar])
    return out + (b"\x00" if result.data is None else b"\x01" + encode_data(result.data))


def _encode_get_request(apdu: GetRequest) -> bytes:
    out = bytes([Tag.GET_REQUEST, apdu.kind, apdu.piid])
    if apdu.kind == GetKind.NORMAL:
        out += apdu.oads[0].encode()
    elif apdu.kind == GetKind.NORMAL_LIST:
        out += encode_length(len(apdu.oads)) + b"".join(o.encode() for o in apdu.oads)
    elif apdu.kind == GetKind.RECORD:
        out += _encode_get_record(apdu.records[0])
    elif apdu.kind == GetKind.RECORD_LIST:
        out += encode_length(len(apdu.records)) + b"".join(
            _encode_get_record(x) for x in apdu.records)  # fmt: skip
    else:
        out += apdu.block.to_bytes(2, "big")
    return out + _encode_time_tag(apdu.time_tag)


def _encode_get_response(apdu: GetResponse) -> bytes:
    out = bytes([Tag.GET_RESPONSE, apdu.kind, apdu.piid_acd])
    if apdu.kind == GetKind.NORMAL:
        out += encode_result_normal(apdu.results[0])
    elif apdu.kind == GetKind.NORMAL_LIST:
        out += encode_length(len(apdu.results)) + b"".join(
            encode_result_normal(x) for x in apdu.results)  # fmt: skip
    elif apdu.kind == GetKind.RECORD:
        out += encode_result_record(apdu.records[0])
    elif apdu.kind == GetKind.RECORD_LIST:
        out += encode_length(len(apdu.records)) + b"".join(
            encode_result_record(x) for x in apdu.records)  # fmt: skip
    else:
        out += bytes([1 if apdu.last else 0]) + apdu.block.to_bytes(2, "big")
        if apdu.dar is not None:
            out += bytes([0, apdu.dar])
        elif apdu.records:
            out += b"\x02" + encode_length(len(apdu.records)) + b"".join(
                encode_result_record(x) for x in apdu.records)  # fmt: skip
        else:
            out += b"\x01" + encode_length(len(apdu.results)) + b"".join(
                encode_result_normal(x) for x in apdu.results)  # fmt: skip
    return out + _server_trailer(apdu)


__all__ = [
    "DAR_TEXT",
    "ActionRequest",
    "ActionResponse",
    "ActionResult",
    "Apdu",
    "ConnectRequest",
    "ConnectResponse",
    "ErrorResponse",
    "FollowReport",
    "GetKind",
    "GetRecord",
    "GetRequest",
    "GetResponse",
    "LinkRequest",
    "LinkResponse",
    "LinkType",
    "ProxyAction",
    "ProxyRequest",
    "ProxyResponse",
    "ProxySet",
    "ProxySetResult",
    "ProxyTarget",
    "ProxyTransparent",
    "ReleaseNotification",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReportNotification",
    "ReportResponse",
    "ResultNormal",
    "ResultRecord",
    "SecurityRequest",
    "SecurityResponse",
    "SetRequest",
    "SetResponse",
    "Tag",
    "TimeTag",
    "Verification",
    "dar_text",
    "decode_apdu",
    "encode_apdu",
]
