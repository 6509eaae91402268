"""Modbus PDUs (function code + data) for the eight public function codes fep speaks: read
coils (1), discrete inputs (2), holding registers (3), input registers (4), write single coil
(5), single register (6), multiple coils (15), multiple registers (16); exception responses
as named errors.

The layout is the Modbus Application Protocol Specification V1.1b3, section 6: every field
big-endian, bits packed least significant first, quantities bounded (2000 bits, 125
registers to read; 1968 bits, 123 registers to write). Requests and responses are decoded
both ways (the client decodes responses, the simulated recorder decodes requests), and
``pdu_length`` tells a framer how long a PDU is from its first bytes. Sans-IO: no Twisted.
Decoding raises FrameError for a layout that is wrong (``decode_request`` also ValueError
for a value out of range), nothing else (fuzzed by tests/fuzz).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import ClassVar, Final

import attrs

from fep.errors import FrameError, ProtocolError

PROTOCOL: Final = "modbus"

MAX_READ_BITS: Final = 2000
MAX_READ_REGISTERS: Final = 125
MAX_WRITE_BITS: Final = 1968
MAX_WRITE_REGISTERS: Final = 123
# A PDU is at most 253 bytes (256 byte RTU ADU less address and CRC).
MAX_PDU: Final = 253
EXCEPTION_BIT: Final = 0x80
COIL_ON: Final = 0xFF00
COIL_OFF: Final = 0x0000


class Function(enum.IntEnum):
    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16


BIT_READS: Final = frozenset({Function.READ_COILS, Function.READ_DISCRETE_INPUTS})
REGISTER_READS: Final = frozenset(
    {Function.READ_HOLDING_REGISTERS, Function.READ_INPUT_REGISTERS}
)
READS: Final = BIT_READS | REGISTER_READS


# ---------------------------------------------------------------------------
# Exception responses (Modbus Application Protocol V1.1b3, section 7)
# ---------------------------------------------------------------------------


class ModbusException(ProtocolError):
    """The device answered a request with an exception response (function code + 0x80).

    ``code`` is the exception code, ``function`` the function refused, ``address`` the first
    address of the request (None when not known)."""

    code: ClassVar[int] = 0
    meaning: ClassVar[str] = "unknown exception"

    def __init__(
        self,
        function: int,
        *,
        code: int | None = None,
        address: int | None = None,
        unit: int | None = None,
        meter: str | None = None,
        route: str | None = None,
    ) -> None:
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.function = function
        self.address = address
        self.unit = unit
        where = f" at address {address}" if address is not None else ""
        who = f"unit {unit} " if unit is not None else ""
        super().__init__(
            f"{who}refused function {function}{where}: exception {self.code} "
            f"({self.meaning})",
            meter=meter,
            route=route,
            protocol=PROTOCOL,
        )


class IllegalFunction(ModbusException):
    code = 1
    meaning = "illegal function"


class IllegalDataAddress(ModbusException):
    code = 2
    meaning = "illegal data address"


class IllegalDataValue(ModbusException):
    code = 3
    meaning = "illegal data value"


class ServerDeviceFailure(ModbusException):
    code = 4
    meaning = "server device failure"


class Acknowledge(ModbusException):
    code = 5
    meaning = "acknowledge (long-running request accepted)"


class ServerDeviceBusy(ModbusException):
    code = 6
    meaning = "server device busy"


class MemoryParityError(ModbusException):
    code = 8
    meaning = "memory parity error"


class GatewayPathUnavailable(ModbusException):
    code = 0x0A
    meaning = "gateway path unavailable"


class GatewayTargetFailed(ModbusException):
    code = 0x0B
    meaning = "gateway target device failed to respond"


EXCEPTIONS: Final[dict[int, type[ModbusException]]] = {
    cls.code: cls
    for cls in (
        IllegalFunction,
        IllegalDataAddress,
        IllegalDataValue,
        ServerDeviceFailure,
        Acknowledge,
        ServerDeviceBusy,
        MemoryParityError,
        GatewayPathUnavailable,
        GatewayTargetFailed,
    )
}


def exception_for(
    function: int,
    code: int,
    *,
    address: int | None = None,
    unit: int | None = None,
    meter: str | None = None,
    route: str | None = None,
) -> ModbusException:
    """The named error for an exception code (ModbusException itself for unknown codes)."""
    cls = EXCEPTIONS.get(code)
    if cls is None:
        return ModbusException(
            function, code=code, address=address, unit=unit, meter=meter, route=route
        )
    return cls(function, address=address, unit=unit, meter=meter, route=route)


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def _u16(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} out of 0..65535")
    return value


@attrs.frozen
class ReadRequest:
    """Read ``count`` coils, discrete inputs, holding or input registers from ``address``."""

    function: Function
    address: int
    count: int

    def __attrs_post_init__(self) -> None:
        if self.function not in READS:
            raise ValueError(f"function {self.function} is no read")
        _u16("address", self.address)
        limit = MAX_READ_BITS if self.function in BIT_READS else MAX_READ_REGISTERS
        if not 1 <= self.count <= limit:
            raise ValueError(f"function {int(self.function)} reads 1..{limit}, not {self.count}")
        if self.address + self.count > 0x10000:
            raise ValueError(f"address {self.address} + {self.count} passes 65535")

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.count)

    @property
    def response_bytes(self) -> int:
        """The byte count the answer must carry."""
        if self.function in BIT_READS:
            return (self.count + 7) // 8
        return 2 * self.count


@attrs.frozen
class WriteSingleRequest:
    """Write one coil (``value`` 0xFF00 on, 0x0000 off) or one holding register."""

    function: Function
    address: int
    value: int

    def __attrs_post_init__(self) -> None:
        if self.function not in (Function.WRITE_SINGLE_COIL, Function.WRITE_SINGLE_REGISTER):
            raise ValueError(f"function {self.function} is no single write")
        _u16("address", self.address)
        _u16("value", self.value)
        if self.function == Function.WRITE_SINGLE_COIL and self.value not in (COIL_ON, COIL_OFF):
            raise ValueError(f"a coil is written 0xFF00 or 0x0000, not 0x{self.value:04X}")

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.value)


def _bools(values: Iterable[object]) -> tuple[bool, ...]:
    return tuple(bool(b) for b in values)


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@attrs.frozen
class WriteCoilsRequest:
    """Write consecutive coils from ``address`` (function 15)."""

    address: int
    bits: tuple[bool, ...] = attrs.field(converter=_bools)
    function: Function = Function.WRITE_MULTIPLE_COILS

    def __attrs_post_init__(self) -> None:
        _u16("address", self.address)
        if not 1 <= len(self.bits) <= MAX_WRITE_BITS:
            raise ValueError(f"function 15 writes 1..{MAX_WRITE_BITS} coils, not {len(self.bits)}")
        if self.address + len(self.bits) > 0x10000:
            raise ValueError(f"address {self.address} + {len(self.bits)} passes 65535")

    def encode(self) -> bytes:
        packed = pack_bits(self.bits)
        return struct.pack(">BHHB", self.function, self.address, len(self.bits), len(packed)) + (
            packed
        )


@attrs.frozen
class WriteRegistersRequest:
    """Write consecutive holding registers from ``address`` (function 16)."""

    address: int
    values: tuple[int, ...] = attrs.field(converter=_ints)
    function: Function = Function.WRITE_MULTIPLE_REGISTERS

    def __attrs_post_init__(self) -> None:
        _u16("address", self.address)
        if not 1 <= len(self.values) <= MAX_WRITE_REGISTERS:
            raise ValueError(
                f"function 16 writes 1..{MAX_WRITE_REGISTERS} registers, not {len(self.values)}"
            )
        for v in self.values:
            _u16("register value", v)
        if self.address + len(self.values) > 0x10000:
            raise ValueError(f"address {self.address} + {len(self.values)} passes 65535")

    def encode(self) -> bytes:
        n = len(self.values)
        return struct.pack(f">BHHB{n}H", self.function, self.address, n, 2 * n, *self.values)


Request = ReadRequest | WriteSingleRequest | WriteCoilsRequest | WriteRegistersRequest


def read_coils(address: int, count: int) -> ReadRequest:
    return ReadRequest(Function.READ_COILS, address, count)


def read_discrete_inputs(address: int, count: int) -> ReadRequest:
    return ReadRequest(Function.READ_DISCRETE_INPUTS, address, count)


def read_holding_registers(address: int, count: int) -> ReadRequest:
    return ReadRequest(Function.READ_HOLDING_REGISTERS, address, count)


def read_input_registers(address: int, count: int) -> ReadRequest:
    return ReadRequest(Function.READ_INPUT_REGISTERS, address, count)


def write_coil(address: int, on: bool) -> WriteSingleRequest:
    return WriteSingleRequest(Function.WRITE_SINGLE_COIL, address, COIL_ON if on else COIL_OFF)


def write_register(address: int, value: int) -> WriteSingleRequest:
    return WriteSingleRequest(Function.WRITE_SINGLE_REGISTER, address, value)


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


@attrs.frozen
class BitsResponse:
    """Coils or discrete inputs as read: ``bits`` holds every bit of the data bytes (a
    multiple of 8); the caller keeps the first ``count`` it asked for."""

    function: Function
    bits: tuple[bool, ...]

    def encode(self) -> bytes:
        packed = pack_bits(self.bits)
        return bytes((self.function, len(packed))) + packed


@attrs.frozen
class RegistersResponse:
    function: Function
    registers: tuple[int, ...]

    def encode(self) -> bytes:
        n = len(self.registers)
        return struct.pack(f">BB{n}H", self.function, 2 * n, *self.registers)


@attrs.frozen
class WriteResponse:
    """The echo of a write: for single writes ``value`` is what was written, for multiple
    writes it is the quantity written."""

    function: Function
    address: int
    value: int

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.value)


@attrs.frozen
class ExceptionResponse:
    function: int
    code: int

    def encode(self) -> bytes:
        return bytes((self.function | EXCEPTION_BIT, self.code))


Response = BitsResponse | RegistersResponse | WriteResponse | ExceptionResponse


def pack_bits(bits: tuple[bool, ...] | list[bool]) -> bytes:
    """Bits packed eight to a byte, the first in the least significant bit (padding 0)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes) -> tuple[bool, ...]:
    return tuple(bool(byte >> i & 1) for byte in data for i in range(8))


# ---------------------------------------------------------------------------
# Lengths, for framers
# ---------------------------------------------------------------------------


def pdu_length(head: bytes | bytearray, *, request: bool) -> int | None:
    """The length of the PDU that starts ``head`` (function code first), None while more
    bytes are needed to tell. FrameError for a function code fep does not know (requests
    and responses) or a byte count that cannot be."""
    if not head:
        return None
    function = head[0]
    if not request and function & EXCEPTION_BIT:
        return 2
    if function in (1, 2, 3, 4, 5, 6):
        if request or function in (5, 6):
            return 5
        if len(head) < 2:
            return None
        count = head[1]
        if count == 0 or (function in (3, 4) and count % 2):
            raise FrameError(f"function {function} answer with byte count {count}", offset=1,
                             field="byte count")
        return 2 + count
    if function in (15, 16):
        if not request:
            return 5
        if len(head) < 6:
            return None
        count = head[5]
        if count == 0 or (function == 16 and count % 2):
            raise FrameError(f"function {function} request with byte count {count}", offset=5,
                             field="byte count")
        return 6 + count
    raise FrameError(f"unknown function code {function}", offset=0, field="function code")


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def decode_response(pdu: bytes) -> Response:
    """A response PDU as sent by a device; FrameError when its layout is wrong."""
    if not pdu:
        raise FrameError("empty PDU", offset=0, field="function code")
    function = pdu[0]
    if function & EXCEPTION_BIT:
        if len(pdu) != 2:
            raise FrameError(f"exception response of {len(pdu)} bytes, not 2", offset=0,
                             field="exception code")
        return ExceptionResponse(function & ~EXCEPTION_BIT, pdu[1])
    try:
        fc = Function(function)
    except ValueError:
        raise FrameError(f"unknown function code {function}", offset=0,
                         field="function code") from None
    if fc in READS:
        if len(pdu) < 2 or len(pdu) != 2 + pdu[1]:
            raise FrameError(f"function {function} answer of {len(pdu)} bytes does not match "
                             "its byte count", offset=1, field="byte count")
        data = pdu[2:]
        if fc in BIT_READS:
            return BitsResponse(fc, unpack_bits(data))
        if len(data) % 2:
            raise FrameError(f"odd register byte count {len(data)}", offset=1,
                             field="byte count")
        return RegistersResponse(fc, struct.unpack(f">{len(data) // 2}H", data))
    if len(pdu) != 5:
        raise FrameError(f"function {function} answer of {len(pdu)} bytes, not 5", offset=0,
                         field="length")
    address, value = struct.unpack(">HH", pdu[1:])
    return WriteResponse(fc, address, value)


def decode_request(pdu: bytes) -> Request:
    """A request PDU as sent by a client. FrameError when its layout is wrong; a request
    with a known layout but a value out of range gives IllegalDataValue-worthy ValueError
    (the server answers exception 3)."""
    if not pdu:
        raise FrameError("empty PDU", offset=0, field="function code")
    try:
        fc = Function(pdu[0])
    except ValueError:
        raise FrameError(f"unknown function code {pdu[0]}", offset=0,
                         field="function code") from None
    if fc in (Function.WRITE_MULTIPLE_COILS, Function.WRITE_MULTIPLE_REGISTERS):
        if len(pdu) < 6 or len(pdu) != 6 + pdu[5]:
            raise FrameError(f"function {int(fc)} request of {len(pdu)} bytes does not match "
                             "its byte count", offset=5, field="byte count")
        address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
        data = pdu[6:]
        if fc == Function.WRITE_MULTIPLE_COILS:
            if nbytes != (count + 7) // 8:
                raise ValueError(f"{count} coils in {nbytes} bytes")
            return WriteCoilsRequest(address, unpack_bits(data)[:count])
        if nbytes != 2 * count:
            raise ValueError(f"{count} registers in {nbytes} bytes")
        return WriteRegistersRequest(address, struct.unpack(f">{count}H", data))
    if len(pdu) != 5:
        raise FrameError(f"function {int(fc)} request of {len(pdu)} bytes, not 5", offset=0,
                         field="length")
    address, value = struct.unpack(">HH", pdu[1:])
    if fc in READS:
        return ReadRequest(fc, address, value)
    return WriteSingleRequest(fc, address, value)


def check_response(request: Request, response: Response) -> str | None:
    """Why ``response`` is no answer to ``request`` (None when it is). An exception
    response to the same function is an answer."""
    if isinstance(response, ExceptionResponse):
        if response.function != request.function:
            return f"exception for function {response.function}, asked {int(request.function)}"
        return None
    if response.function != request.function:
        return f"answer to function {int(response.function)}, asked {int(request.function)}"
    if isinstance(request, ReadRequest):
        if isinstance(response, BitsResponse):
            got = len(response.bits) // 8
        elif isinstance(response, RegistersResponse):
            got = 2 * len(response.registers)
        else:
            return "write echo to a read"
        if got != request.response_bytes:
            return f"{got} data bytes, expected {request.response_bytes}"
        return None
    if not isinstance(response, WriteResponse):
        return "read answer to a write"
    expected = (
        request.value
        if isinstance(request, WriteSingleRequest)
        else len(request.bits)
        if isinstance(request, WriteCoilsRequest)
        else len(request.values)
    )
    if (response.address, response.value) != (request.address, expected):
        return (
            f"write echo {response.address}/{response.value}, expected "
            f"{request.address}/{expected}"
        )
    return None


__all__ = [
    "BitsResponse",
    "ExceptionResponse",
    "Function",
    "ModbusException",
    "ReadRequest",
    "RegistersResponse",
    "Request",
    "Response",
    "WriteCoilsRequest",
    "WriteRegistersRequest",
    "WriteResponse",
    "WriteSingleRequest",
    "check_response",
    "decode_request",
    "decode_response",
    "exception_for",
    "pdu_length",
]
