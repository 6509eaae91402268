"""ANSI C12.19 procedures: the initiate record written to ST7 (PROC_INITIATE_TBL), the
response read back from ST8 (PROC_RESPONSE_TBL) and its result code, and the parameters of
the standard procedures fep runs (SP 4 reset list pointers, SP 9 remote reset, SP 10 set
date and/or time) and of the simulator's manufacturer relay procedure.

Sans-IO: records in, table bytes out and back. ``TBL_PROC_NBR`` is a UINT16 in the byte
order ST0 gives (DATA_ORDER): PROC_NBR in bits 0..10, STD_VS_MFG_FLAG in bit 11 (set: a
manufacturer procedure), SELECTOR in bits 12..15 (0: post the response in ST8 when the
procedure has completed). A meter's result code 1..6 becomes a ``ProcedureRefused`` naming
the meter, the command, the procedure and the code.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.ansi_c12.c1218 import PROTOCOL
from fep.protocols.ansi_c12.c1219 import GeneralConfig, decode_ltime, encode_ltime

ST7_PROC_INITIATE: Final = 7
ST8_PROC_RESPONSE: Final = 8

# Standard procedure numbers (C12.19 9.1).
SP_CLEAR_DATA: Final = 3
SP_RESET_LIST_POINTERS: Final = 4
SP_REMOTE_RESET: Final = 9
SP_SET_DATE_TIME: Final = 10

PROCEDURE_NAMES: Final[dict[int, str]] = {
    0: "cold start",
    1: "warm start",
    2: "save configuration",
    3: "clear data",
    4: "reset list pointers",
    5: "update last read entry",
    6: "change end device mode",
    7: "clear standard status flags",
    8: "clear manufacturer status flags",
    9: "remote reset",
    10: "set date and/or time",
    11: "execute diagnostics",
    12: "activate all pending tables",
    13: "activate specific pending tables",
    14: "clear all pending tables",
    15: "clear specific pending tables",
    16: "start load profile",
    17: "stop load profile",
    18: "log in",
    19: "log out",
    20: "initiate an immediate call",
    21: "direct load control",
    22: "modify credit",
}

# SP 4 RESET_LIST_PTRS: which list (LIST, UINT8).
LIST_EVENT_LOG: Final = 1
LIST_SELF_READS: Final = 2
LIST_LP_SET1: Final = 3
LIST_HISTORY_LOG: Final = 7

# SP 9 REMOTE_RESET: ACTION_FLAG bits.
DEMAND_RESET_FLAG: Final = 0x01
SELF_READ_FLAG: Final = 0x02
SEASON_CHANGE_FLAG: Final = 0x04

# SP 10 SET_DATE_TIME: SET_MASK bits.
SET_TIME_FLAG: Final = 0x01
SET_DATE_FLAG: Final = 0x02
SET_TIME_DATE_QUAL_FLAG: Final = 0x04

_PROC_NBR_MASK: Final = 0x07FF
_MFG_BIT: Final = 0x0800


class ResultCode(enum.IntEnum):
    """RESULT_CODE of ST8."""

    COMPLETED = 0
    NOT_COMPLETED = 1
    INVALID_PARAMETER = 2
    CONFLICT_WITH_SETUP = 3
    TIMING_CONSTRAINT = 4
    NO_AUTHORIZATION = 5
    UNRECOGNIZED = 6


RESULT_TEXT: Final[dict[int, str]] = {
    ResultCode.COMPLETED: "procedure completed",
    ResultCode.NOT_COMPLETED: "procedure accepted but not fully completed",
    ResultCode.INVALID_PARAMETER: "invalid parameter for known procedure, procedure ignored",
    ResultCode.CONFLICT_WITH_SETUP: "procedure conflicts with current device setup, "
    "procedure ignored",
    ResultCode.TIMING_CONSTRAINT: "timing constraint, procedure ignored",
    ResultCode.NO_AUTHORIZATION: "no authorization for requested procedure, procedure ignored",
    ResultCode.UNRECOGNIZED: "unrecognized procedure, procedure ignored",
}


def procedure_label(number: int, mfg: bool) -> str:
    """``SP9 (remote reset)`` or ``MP2``."""
    if mfg:
        return f"MP{number}"
    name = PROCEDURE_NAMES.get(number)
    return f"SP{number} ({name})" if name else f"SP{number}"


class ProcedureRefused(ProtocolError):
    """The meter answered a procedure in ST8 with a result code other than completed."""

    def __init__(
        self,
        message: str,
        *,
        result_code: int,
        procedure: int,
        mfg: bool,
        command: str | None = None,
        meter: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message, meter=meter, route=route, protocol=PROTOCOL)
        self.result_code = result_code
        self.procedure = procedure
        self.mfg = mfg
        self.command = command


def _proc_field(number: int, mfg: bool, selector: int, config: GeneralConfig) -> bytes:
    if not 0 <= number <= _PROC_NBR_MASK:
        raise ValueError(f"procedure number {number} is not 0..2047")
    if not 0 <= selector <= 15:
        raise ValueError(f"selector {selector} is not 0..15")
    value = number | (_MFG_BIT if mfg else 0) | selector << 12
    return value.to_bytes(2, config.byte_order)


def _split_proc(raw: bytes, config: GeneralConfig) -> tuple[int, bool, int]:
    value = int.from_bytes(raw, config.byte_order)
    return value & _PROC_NBR_MASK, bool(value & _MFG_BIT), value >> 12


@attrs.frozen
class ProcedureRequest:
    """PROC_INITIATE_TBL (ST7): TBL_PROC_NBR, SEQ_NBR and the procedure's parameters."""

    number: int
    seq: int
    params: bytes = b""
    mfg: bool = False
    selector: int = 0

    @property
    def label(self) -> str:
        return procedure_label(self.number, self.mfg)

    def encode(self, config: GeneralConfig) -> bytes:
        if not 0 <= self.seq <= 255:
            raise ValueError(f"sequence number {self.seq} is not 0..255")
        return _proc_field(self.number, self.mfg, self.selector, config) + bytes([self.seq]) + (
            self.params
        )

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ProcedureRequest:
        if len(data) < 3:
            raise FrameError(f"ST7 needs 3 bytes, got {len(data)}", offset=len(data), field="ST7")
        number, mfg, selector = _split_proc(data[:2], config)
        return cls(number, data[2], data[3:], mfg, selector)


@attrs.frozen
class ProcedureResponse:
    """PROC_RESPONSE_TBL (ST8): TBL_PROC_NBR and SEQ_NBR of the procedure answered, its
    RESULT_CODE and RESP_DATA_RCD."""

    number: int
    seq: int
    result: int
    data: bytes = b""
    mfg: bool = False
    selector: int = 0

    @property
    def label(self) -> str:
        return procedure_label(self.number, self.mfg)

    @property
    def result_text(self) -> str:
        text = RESULT_TEXT.get(self.result)
        return text if text is not None else "result code not defined by C12.19"

    def encode(self, config: GeneralConfig) -> bytes:
        return (
            _proc_field(self.number, self.mfg, self.selector, config)
            + bytes([self.seq, self.result])
            + self.data
        )

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ProcedureResponse:
        if len(data) < 4:
            raise FrameError(f"ST8 needs 4 bytes, got {len(data)}", offset=len(data), field="ST8")
        number, mfg, selector = _split_proc(data[:2], config)
        return cls(number, data[2], data[3], data[4:], mfg, selector)

    def answers(self, request: ProcedureRequest) -> bool:
        """Whether this is the response to ``request`` (same procedure and sequence)."""
        return (self.number, self.mfg, self.seq) == (request.number, request.mfg, request.seq)

    def check(
        self,
        request: ProcedureRequest,
        *,
        command: str | None = None,
        meter: str | None = None,
        route: str | None = None,
    ) -> bytes:
        """RESP_DATA of a completed procedure; ProtocolError when ST8 answers another
        procedure, ProcedureRefused for a result code other than completed."""
        who = f"meter {meter}" if meter else "meter"
        what = f"{command} ({request.label})" if command else request.label
        if not self.answers(request):
            raise ProtocolError(
                f"{who}: ST8 answers {self.label} sequence {self.seq}, not {request.label} "
                f"sequence {request.seq} ({what})",
                meter=meter,
                route=route,
                protocol=PROTOCOL,
            )
        if self.result == ResultCode.COMPLETED:
            return self.data
        raise ProcedureRefused(
            f"{who} refused {what}: result code {self.result} ({self.result_text})",
            result_code=self.result,
            procedure=request.number,
            mfg=request.mfg,
            command=command,
            meter=meter,
            route=route,
        )


# ---------------------------------------------------------------------------
# Parameters of the standard procedures
# ---------------------------------------------------------------------------


@attrs.frozen
class RemoteReset:
    """SP 9 REMOTE_RESET's ACTION_FLAG: demand reset, self read, season change to
    ``new_season`` (0..15)."""

    demand_reset: bool = True
    self_read: bool = False
    new_season: int | None = None

    def encode(self) -> bytes:
        flags = (DEMAND_RESET_FLAG if self.demand_reset else 0) | (
            SELF_READ_FLAG if self.self_read else 0
        )
        if self.new_season is not None:
            if not 0 <= self.new_season <= 15:
                raise ValueError(f"season {self.new_season} is not 0..15")
            flags |= SEASON_CHANGE_FLAG | self.new_season << 3
        return bytes([flags])

    @classmethod
    def decode(cls, params: bytes) -> RemoteReset:
        """ValueError for parameters SP 9 does not have (the meter answers result 2)."""
        if len(params) != 1 or params[0] & 0x80:
            raise ValueError("SP9 takes one ACTION_FLAG byte, bit 7 clear")
        flags = params[0]
        season = (flags >> 3) & 0x0F if flags & SEASON_CHANGE_FLAG else None
        return cls(bool(flags & DEMAND_RESET_FLAG), bool(flags & SELF_READ_FLAG), season)


@attrs.frozen
class SetDateTime:
    """SP 10 SET_DATE_TIME: SET_MASK, DATE_TIME (an LTIME_DATE in ST0's TM_FORMAT, the
    meter's local time unless the qualifier's GMT flag says UTC) and TIME_DATE_QUAL
    (day of week 0..6 Sunday first, DST and GMT flags)."""

    when: datetime
    mask: int = SET_TIME_FLAG | SET_DATE_FLAG
    day_of_week: int = 7
    dst: bool = False
    gmt: bool = False

    def encode(self, config: GeneralConfig) -> bytes:
        qual = (self.day_of_week & 0x07) | int(self.dst) << 3 | int(self.gmt) << 4
        return bytes([self.mask]) + encode_ltime(self.when, config) + bytes([qual])

    @classmethod
    def decode(cls, params: bytes, config: GeneralConfig) -> SetDateTime:
        """ValueError for parameters that do not fit (the meter answers result 2): the
        length, a mask with no flag or reserved bits, an impossible date. ``when`` comes
        back naive-as-UTC: the qualifier says whose time it is."""
        size = len(encode_ltime(datetime(2000, 1, 1, tzinfo=UTC), config))
        if len(params) != size + 2:
            raise ValueError(f"SP10 takes {size + 2} bytes, got {len(params)}")
        mask = params[0]
        if not mask & 0x07 or mask & 0xF8:
            raise ValueError(f"SP10 SET_MASK 0x{mask:02X} sets nothing or reserved bits")
        qual = params[-1]
        try:
            when = decode_ltime(params[1:-1], config, UTC, 7)
        except FrameError as e:
            raise ValueError(e.message) from None
        return cls(when, mask, qual & 0x07, bool(qual & 0x08), bool(qual & 0x10))


def reset_list(which: int) -> bytes:
    """SP 4 RESET_LIST_PTRS's parameter: the LIST (event log 1, self reads 2, load profile
    sets 3..6, history log 7)."""
    if not 0 < which <= 255:
        raise ValueError(f"list {which} is not 1..255")
    return bytes([which])


# ---------------------------------------------------------------------------
# The simulator's relay procedure (manufacturer procedure; documented, not standard)
# ---------------------------------------------------------------------------


class RelayAction(enum.IntEnum):
    """Parameter of fep's simulated meter's relay procedure (MP ``c12_relay_procedure``,
    default MP2): one byte; the response data is one byte, the relay's state after it."""

    OPEN = 0  # disconnect the supply
    CLOSE = 1  # reconnect
    STATE = 2  # report only


class RelayState(enum.IntEnum):
    OPEN = 0
    CLOSED = 1


def relay_state(data: bytes, *, meter: str | None = None) -> RelayState:
    """The relay state in a relay procedure's response data; FrameError otherwise."""
    if len(data) != 1 or data[0] not in (0, 1):
        raise FrameError(
            f"relay procedure response is one byte 0 (open) or 1 (closed), got {data.hex()}",
            offset=0,
            field="RESP_DATA",
        )
    return RelayState(data[0])


__all__ = [
    "ProcedureRefused",
    "ProcedureRequest",
    "ProcedureResponse",
    "RelayAction",
    "RelayState",
    "RemoteReset",
    "ResultCode",
    "SetDateTime",
    "procedure_label",
    "relay_state",
    "reset_list",
]
