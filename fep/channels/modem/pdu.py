"""SMS transfer-layer PDUs (3GPP TS 23.040) with the alphabets of 3GPP TS 23.038.

SMS-SUBMIT, SMS-DELIVER and SMS-STATUS-REPORT with the service-centre address in front, as an
AT modem shows and takes them in PDU mode (``AT+CMGF=0``): addresses (international, national,
alphanumeric), the GSM 7-bit default alphabet with its extension table, 8-bit data and UCS2,
the user-data header (concatenation with 8-bit and 16-bit references, any other element kept
as it came), the validity period (relative, absolute, enhanced) and timestamps with their zone.
Splitting a long text into concatenated parts and joining received parts live here too.

Sans-IO: no Twisted. Bad bytes raise FrameError naming the field and byte offset; bad values
handed to an encoder raise ValueError.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Final

import attrs

from fep.errors import FrameError

# ---------------------------------------------------------------------------
# GSM 7-bit default alphabet (TS 23.038 6.2.1) and its extension table (6.2.1.1)
# ---------------------------------------------------------------------------

ESC: Final = 0x1B

# Position = septet value; 0x1B is the escape to the extension table.
GSM7_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final = {
    0x0A: "\x0c",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
assert len(GSM7_BASIC) == 128

_GSM7_ENCODE: dict[str, bytes] = {}
for _value, _char in enumerate(GSM7_BASIC):
    if _value != ESC:
        _GSM7_ENCODE[_char] = bytes((_value,))
for _value, _char in GSM7_EXTENSION.items():
    _GSM7_ENCODE[_char] = bytes((ESC, _value))

MAX_SEPTETS: Final = 160
MAX_OCTETS: Final = 140


def gsm7_encodable(text: str) -> bool:
    """Whether every character of ``text`` is in the default alphabet or its extension."""
    return all(char in _GSM7_ENCODE for char in text)


def gsm7_encode(text: str) -> bytes:
    """Septet values, one per byte (an extension character takes two: ESC and its code)."""
    out = bytearray()
    for index, char in enumerate(text):
        septets = _GSM7_ENCODE.get(char)
        if septets is None:
            raise ValueError(
                f"character {char!r} at position {index} is not in the GSM 7-bit alphabet"
            )
        out += septets
    return bytes(out)


def gsm7_decode(septets: bytes) -> str:
    """Text of septet values. An escape before a code the extension table lacks gives the
    basic character (TS 23.038 6.2.1.1); ESC ESC and a trailing ESC give a space."""
    out: list[str] = []
    escaped = False
    for value in septets:
        value &= 0x7F
        if escaped:
            escaped = False
            if value == ESC:
                out.append(" ")
            else:
                out.append(GSM7_EXTENSION.get(value, GSM7_BASIC[value]))
        elif value == ESC:
            escaped = True
        else:
            out.append(GSM7_BASIC[value])
    if escaped:
        out.append(" ")
    return "".join(out)


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack 7-bit values into octets, least significant bit first, after ``fill_bits`` zero
    bits (the padding that aligns text to a septet boundary after a user-data header)."""
    value = 0
    bits = fill_bits
    out = bytearray()
    for septet in septets:
        value |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(value & 0xFF)
            value >>= 8
            bits -= 8
    if bits:
        out.append(value & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """``count`` 7-bit values from packed octets, skipping ``fill_bits`` first."""
    whole = int.from_bytes(data, "little")
    return bytes((whole >> (fill_bits + 7 * i)) & 0x7F for i in range(count))


def packed_length(septets: int, fill_bits: int = 0) -> int:
    """Octets that ``septets`` packed septets take after ``fill_bits`` fill bits."""
    return (fill_bits + 7 * septets + 7) // 8


# ---------------------------------------------------------------------------
# Byte reader that turns running out of bytes into FrameError
# ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FrameError(
                f"PDU ends inside {field}: {n} byte(s) needed at offset {self.pos}, "
                f"{len(self.data) - self.pos} left",
                offset=self.pos,
                field=field,
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def octet(self, field: str) -> int:
        return self.take(1, field)[0]

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


# ---------------------------------------------------------------------------
# Addresses (TS 23.040 9.1.2.5, TS 24.008 10.5.4.7 digits)
# ---------------------------------------------------------------------------

TON_UNKNOWN: Final = 0
TON_INTERNATIONAL: Final = 1
TON_NATIONAL: Final = 2
TON_NETWORK: Final = 3
TON_SUBSCRIBER: Final = 4
TON_ALPHANUMERIC: Final = 5
TON_ABBREVIATED: Final = 6
NPI_ISDN: Final = 1

_DIGITS: Final = "0123456789*#abc"
_DIGIT_VALUE: Final = {char: value for value, char in enumerate(_DIGITS)}
MAX_ADDRESS_DIGITS: Final = 20
MAX_ALPHANUMERIC: Final = 11


@attrs.frozen
class Address:
    """A phone number (digits, ``*#abc``) or an alphanumeric sender, with its type of number
    (TON) and numbering plan (NPI). ``str()`` gives ``+`` before international numbers."""

    number: str
    ton: int = TON_UNKNOWN
    npi: int = NPI_ISDN

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.ton <= 7 or not 0 <= self.npi <= 15:
            raise ValueError(f"type of address out of range: TON {self.ton}, NPI {self.npi}")
        if self.ton == TON_ALPHANUMERIC:
            if not gsm7_encodable(self.number) or len(gsm7_encode(self.number)) > MAX_ALPHANUMERIC:
                raise ValueError(
                    f"alphanumeric address is at most 11 GSM 7-bit septets: {self.number!r}"
                )
        else:
            if len(self.number) > MAX_ADDRESS_DIGITS:
                raise ValueError(f"address has more than 20 digits: {self.number!r}")
            bad = [c for c in self.number if c not in _DIGIT_VALUE]
            if bad:
                raise ValueError(f"address {self.number!r} has non-digit {bad[0]!r}")

    @classmethod
    def parse(cls, text: str) -> Address:
        """``+4915...`` is international, plain digits are of unknown type (the network
        decides), anything with letters is an alphanumeric sender."""
        text = text.strip().replace(" ", "")
        if text.startswith("+"):
            return cls(text[1:], TON_INTERNATIONAL, NPI_ISDN)
        if text and all(c in "0123456789*#" for c in text):
            return cls(text, TON_UNKNOWN, NPI_ISDN)
        return cls(text, TON_ALPHANUMERIC, 0)

    @property
    def type_octet(self) -> int:
        """The type-of-address octet: 1 TON(3) NPI(4), e.g. 0x91 for international ISDN."""
        return 0x80 | (self.ton << 4) | self.npi

    def __str__(self) -> str:
        if self.ton == TON_INTERNATIONAL and self.number:
            return "+" + self.number
        return self.number


def _encode_digits(number: str) -> bytes:
    values = [_DIGIT_VALUE[c] for c in number]
    if len(values) % 2:
        values.append(0xF)
    return bytes(values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2))


def _decode_digits(raw: bytes, count: int, base: int, field: str) -> str:
    out: list[str] = []
    for i in range(count):
        value = (raw[i // 2] >> (4 * (i % 2))) & 0x0F
        if value == 0xF:
            raise FrameError(
                f"{field} has a filler nibble in digit {i + 1} of {count}",
                offset=base + i // 2,
                field=field,
            )
        out.append(_DIGITS[value])
    return "".join(out)


def encode_address(address: Address) -> bytes:
    """TP-OA/TP-DA/TP-RA: length in useful semi-octets, type of address, digits."""
    if address.ton == TON_ALPHANUMERIC:
        septets = gsm7_encode(address.number)
        packed = pack_septets(septets)
        # Useful semi-octets: enough for the septets' bits, no more (so no '@' padding).
        length = (7 * len(septets) + 3) // 4
        return bytes((length, address.type_octet)) + packed
    return bytes((len(address.number), address.type_octet)) + _encode_digits(address.number)


def _read_address(reader: _Reader, field: str) -> Address:
    start = reader.pos
    length = reader.octet(field)
    if length > MAX_ADDRESS_DIGITS:
        raise FrameError(
            f"{field} length {length} exceeds 20 semi-octets", offset=start, field=field
        )
    toa = reader.octet(field)
    raw = reader.take((length + 1) // 2, field)
    ton, npi = (toa >> 4) & 0x07, toa & 0x0F
    if ton == TON_ALPHANUMERIC:
        text = gsm7_decode(unpack_septets(raw, length * 4 // 7))
        return Address(text, ton, npi)
    return Address(_decode_digits(raw, length, start + 2, field), ton, npi)


def encode_smsc(smsc: Address | None) -> bytes:
    """The service-centre field in front of a PDU: length in octets (type of address
    included), or a single 00 for 'the SMSC stored in the modem'."""
    if smsc is None or not smsc.number:
        return b"\x00"
    if smsc.ton == TON_ALPHANUMERIC:
        raise ValueError("a service-centre address cannot be alphanumeric")
    digits = _encode_digits(smsc.number)
    return bytes((len(digits) + 1, smsc.type_octet)) + digits


def _read_smsc(reader: _Reader) -> Address | None:
    start = reader.pos
    length = reader.octet("SCA")
    if length == 0:
        return None
    if length > 1 + MAX_ADDRESS_DIGITS // 2:
        raise FrameError(f"SCA length {length} exceeds 11 octets", offset=start, field="SCA")
    toa = reader.octet("SCA")
    raw = reader.take(length - 1, "SCA")
    digits = 2 * len(raw)
    if raw and raw[-1] >> 4 == 0xF:
        digits -= 1
    ton = (toa >> 4) & 0x07
    if ton == TON_ALPHANUMERIC:
        raise FrameError("SCA says it is alphanumeric", offset=start + 1, field="SCA")
    return Address(_decode_digits(raw, digits, start + 2, "SCA"), ton, toa & 0x0F)


# ---------------------------------------------------------------------------
# Timestamps (TS 23.040 9.2.3.11) and validity periods (9.2.3.12)
# ---------------------------------------------------------------------------

MAX_ZONE_QUARTERS: Final = 79


def _bcd_swapped(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


def encode_timestamp(moment: datetime) -> bytes:
    """Seven swapped-BCD octets: year (2 digits), month, day, hour, minute, second, and
    the zone in quarter hours with its sign in bit 3. ``moment`` must be aware, 1970..2069,
    with a zone that is a whole number of quarter hours."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("an SMS timestamp needs a time zone")
    quarters, rest = divmod(int(offset.total_seconds()), 900)
    if rest or abs(quarters) > MAX_ZONE_QUARTERS:
        raise ValueError(f"zone {offset} is not a whole number of quarter hours within ±79")
    if not 1970 <= moment.year <= 2069:
        raise ValueError(f"year {moment.year} is outside 1970..2069 (two digits on the air)")
    fields = (
        moment.year % 100,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )
    zone = _bcd_swapped(abs(quarters)) | (0x08 if quarters < 0 else 0)
    return bytes(_bcd_swapped(v) for v in fields) + bytes((zone,))


def decode_timestamp(raw: bytes, offset: int = 0, field: str = "TP-SCTS") -> datetime:
    """The aware datetime of seven timestamp octets (two-digit years 70..99 are 19xx)."""
    if len(raw) != 7:
        raise FrameError(f"{field} is 7 octets, got {len(raw)}", offset=offset, field=field)
    values: list[int] = []
    for i, octet in enumerate(raw[:6]):
        low, high = octet & 0x0F, octet >> 4
        if low > 9 or high > 9:
            raise FrameError(
                f"{field} octet {i + 1} (0x{octet:02X}) is not BCD",
                offset=offset + i,
                field=field,
            )
        values.append(low * 10 + high)
    zone_octet = raw[6]
    tens, units = zone_octet & 0x07, zone_octet >> 4
    if units > 9:
        raise FrameError(
            f"{field} zone octet 0x{zone_octet:02X} is not BCD", offset=offset + 6, field=field
        )
    quarters = tens * 10 + units
    if zone_octet & 0x08:
        quarters = -quarters
    year, month, day, hour, minute, second = values
    year += 1900 if year >= 70 else 2000
    try:
        return datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            tzinfo=timezone(timedelta(minutes=15 * quarters)),
        )
    except ValueError as error:
        raise FrameError(f"{field} is not a valid time: {error}", offset=offset, field=field)


def relative_validity(octet: int) -> timedelta:
    """The period a relative TP-VP octet stands for."""
    if octet <= 143:
        return timedelta(minutes=5 * (octet + 1))
    if octet <= 167:
        return timedelta(hours=12, minutes=30 * (octet - 143))
    if octet <= 196:
        return timedelta(days=octet - 166)
    return timedelta(weeks=octet - 192)


def relative_validity_octet(period: timedelta) -> int:
    """The smallest relative TP-VP at least ``period`` long (5 minutes .. 63 weeks)."""
    if period <= timedelta(0):
        raise ValueError(f"validity period must be positive, got {period}")
    if period > timedelta(weeks=63):
        raise ValueError(f"validity period {period} exceeds 63 weeks")
    for octet in range(256):
        if relative_validity(octet) >= period:
            return octet
    raise AssertionError("unreachable: 255 is 63 weeks")


@attrs.frozen
class EnhancedValidity:
    """An enhanced-format TP-VP (seven octets; functionality indicator first), kept as it
    came; ``period`` is its meaning where the format is one of the three defined."""

    octets: bytes

    def __attrs_post_init__(self) -> None:
        if len(self.octets) != 7:
            raise ValueError("an enhanced validity period is 7 octets")

    @property
    def single_shot(self) -> bool:
        return bool(self.octets[0] & 0x40)

    @property
    def period(self) -> timedelta | None:
        indicator = self.octets[0]
        if indicator & 0x80:
            return None
        fmt = indicator & 0x07
        if fmt == 1:
            return relative_validity(self.octets[1])
        if fmt == 2:
            return timedelta(seconds=self.octets[1])
        if fmt == 3:
            digits = [(o & 0x0F) * 10 + (o >> 4) for o in self.octets[1:4]]
            if any(o & 0x0F > 9 or o >> 4 > 9 for o in self.octets[1:4]):
                return None
            return timedelta(hours=digits[0], minutes=digits[1], seconds=digits[2])
        return None


Validity = timedelta | datetime | EnhancedValidity

VPF_NONE: Final = 0
VPF_ENHANCED: Final = 1
VPF_RELATIVE: Final = 2
VPF_ABSOLUTE: Final = 3


# ---------------------------------------------------------------------------
# Data coding scheme (TS 23.038 clause 4)
# ---------------------------------------------------------------------------


class Alphabet(enum.Enum):
    GSM7 = "gsm7"
    DATA8 = "8bit"
    UCS2 = "ucs2"


@attrs.frozen
class DataCoding:
    """What a TP-DCS octet says: the alphabet, the message class (0 flash, 1 ME, 2 SIM,
    3 TE, or None), compression, and the message-waiting groups."""

    alphabet: Alphabet
    message_class: int | None = None
    compressed: bool = False
    auto_delete: bool = False
    waiting: str | None = None  # "discard" / "store" for the message-waiting groups


def data_coding(octet: int) -> DataCoding:
    """Read a TP-DCS octet; reserved alphabets and groups mean the default alphabet."""
    group = octet >> 4
    if group <= 0x7:
        alphabet = (Alphabet.GSM7, Alphabet.DATA8, Alphabet.UCS2, Alphabet.GSM7)[(octet >> 2) & 3]
        return DataCoding(
            alphabet,
            octet & 0x03 if octet & 0x10 else None,
            compressed=bool(octet & 0x20),
            auto_delete=bool(octet & 0x40),
        )
    if group == 0xC:
        return DataCoding(Alphabet.GSM7, waiting="discard")
    if group == 0xD:
        return DataCoding(Alphabet.GSM7, waiting="store")
    if group == 0xE:
        return DataCoding(Alphabet.UCS2, waiting="store")
    if group == 0xF:
        return DataCoding(Alphabet.DATA8 if octet & 0x04 else Alphabet.GSM7, octet & 0x03)
    return DataCoding(Alphabet.GSM7)


def dcs_octet(alphabet: Alphabet, message_class: int | None = None) -> int:
    """The general-group TP-DCS for an alphabet and optional message class."""
    code = {Alphabet.GSM7: 0x00, Alphabet.DATA8: 0x04, Alphabet.UCS2: 0x08}[alphabet]
    if message_class is not None:
        if not 0 <= message_class <= 3:
            raise ValueError(f"message class is 0..3, got {message_class}")
        code |= 0x10 | message_class
    return code


# ---------------------------------------------------------------------------
# User data and its header (TS 23.040 9.2.3.24)
# ---------------------------------------------------------------------------

IEI_CONCAT_8: Final = 0x00
IEI_CONCAT_16: Final = 0x08
IEI_PORTS_8: Final = 0x04
IEI_PORTS_16: Final = 0x05


@attrs.frozen
class InformationElement:
    """One user-data-header element: identifier and data, kept as they came."""

    iei: int
    data: bytes = b""

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.iei <= 255 or len(self.data) > 255:
            raise ValueError("information element identifier 0..255 and at most 255 octets")


@attrs.frozen
class Concat:
    """Concatenation: part ``sequence`` (1-based) of ``total``, all parts sharing
    ``reference`` (8-bit with IEI 00, 16-bit with IEI 08)."""

    reference: int
    total: int
    sequence: int
    wide: bool = False

    def element(self) -> InformationElement:
        if self.wide:
            return InformationElement(
                IEI_CONCAT_16,
                self.reference.to_bytes(2, "big") + bytes((self.total, self.sequence)),
            )
        return InformationElement(IEI_CONCAT_8, bytes((self.reference, self.total, self.sequence)))


def _concat_of(element: InformationElement) -> Concat | None:
    data = element.data
    if element.iei == IEI_CONCAT_8 and len(data) == 3:
        concat = Concat(data[0], data[1], data[2])
    elif element.iei == IEI_CONCAT_16 and len(data) == 4:
        concat = Concat(int.from_bytes(data[:2], "big"), data[2], data[3], wide=True)
    else:
        return None
    # TS 23.040 9.2.3.24.1: a part number of 0 or above the total means: ignore the element.
    if concat.total == 0 or not 1 <= concat.sequence <= concat.total:
        return None
    return concat


@attrs.frozen
class UserData:
    """TP-UD: header elements and the body, text for GSM 7-bit and UCS2 (UCS2 as UTF-16, lone
    surrogates kept so a pair split over two parts joins again) or bytes for 8-bit data."""

    body: str | bytes = ""
    header: tuple[InformationElement, ...] = ()

    @property
    def concat(self) -> Concat | None:
        for element in self.header:
            concat = _concat_of(element)
            if concat is not None:
                return concat
        return None

    def header_bytes(self) -> bytes:
        if not self.header:
            return b""
        elements = b"".join(bytes((e.iei, len(e.data))) + e.data for e in self.header)
        return bytes((len(elements),)) + elements


def encode_user_data(user_data: UserData, alphabet: Alphabet) -> tuple[int, bytes]:
    """TP-UDL and TP-UD for ``alphabet``."""
    header = user_data.header_bytes()
    body = user_data.body
    if alphabet is Alphabet.GSM7:
        if not isinstance(body, str):
            raise ValueError("GSM 7-bit user data needs text")
        septets = gsm7_encode(body)
        header_septets = (8 * len(header) + 6) // 7
        fill = 7 * header_septets - 8 * len(header)
        udl = header_septets + len(septets)
        if udl > MAX_SEPTETS:
            raise ValueError(f"user data of {udl} septets exceeds {MAX_SEPTETS}")
        return udl, header + pack_septets(septets, fill)
    if alphabet is Alphabet.UCS2:
        if not isinstance(body, str):
            raise ValueError("UCS2 user data needs text")
        payload = body.encode("utf-16-be", "surrogatepass")
    else:
        if not isinstance(body, bytes):
            raise ValueError("8-bit user data needs bytes")
        payload = body
    ud = header + payload
    if len(ud) > MAX_OCTETS:
        raise ValueError(f"user data of {len(ud)} octets exceeds {MAX_OCTETS}")
    return len(ud), ud


def _read_header(ud: bytes, base: int) -> tuple[InformationElement, ...]:
    if not ud:
        raise FrameError("TP-UDHI set but no user data", offset=base, field="TP-UDH")
    length = ud[0]
    if 1 + length > len(ud):
        raise FrameError(
            f"TP-UDHL {length} runs past the user data ({len(ud) - 1} octets)",
            offset=base,
            field="TP-UDH",
        )
    elements: list[InformationElement] = []
    pos = 1
    while pos < 1 + length:
        if pos + 2 > 1 + length:
            raise FrameError(
                "user-data header ends inside an element", offset=base + pos, field="TP-UDH"
            )
        iei, size = ud[pos], ud[pos + 1]
        if pos + 2 + size > 1 + length:
            raise FrameError(
                f"element 0x{iei:02X} of {size} octets runs past the header",
                offset=base + pos,
                field="TP-UDH",
            )
        elements.append(InformationElement(iei, bytes(ud[pos + 2 : pos + 2 + size])))
        pos += 2 + size
    return tuple(elements)


def user_data_size(udl: int, dcs: int) -> int:
    """Octets of TP-UD that a TP-UDL of ``udl`` stands for under ``dcs``."""
    coding = data_coding(dcs)
    if coding.alphabet is Alphabet.GSM7 and not coding.compressed:
        return packed_length(udl)
    return udl


def decode_user_data(ud: bytes, udl: int, dcs: int, udhi: bool, base: int = 0) -> UserData:
    """TP-UD octets (exactly ``user_data_size`` of them) -> header and body. ``base`` is the
    octets' offset in the PDU, for errors. Text-mode AT answers give the same octets in hex."""
    coding = data_coding(dcs)
    septets = coding.alphabet is Alphabet.GSM7 and not coding.compressed
    limit = MAX_SEPTETS if septets else MAX_OCTETS
    if udl > limit:
        unit = "septets" if septets else "octets"
        raise FrameError(
            f"TP-UDL {udl} {unit} exceeds {limit}", offset=max(base - 1, 0), field="TP-UDL"
        )
    if len(ud) != user_data_size(udl, dcs):
        raise FrameError(
            f"TP-UD is {len(ud)} octets, TP-UDL {udl} needs {user_data_size(udl, dcs)}",
            offset=base,
            field="TP-UD",
        )
    header: tuple[InformationElement, ...] = ()
    header_len = 0
    if udhi:
        header = _read_header(ud, base)
        header_len = 1 + ud[0]
    if septets:
        header_septets = (8 * header_len + 6) // 7
        if header_septets > udl:
            raise FrameError(
                f"user-data header of {header_len} octets is longer than TP-UDL {udl} septets",
                offset=max(base - 1, 0),
                field="TP-UDL",
            )
        fill = 7 * header_septets - 8 * header_len
        values = unpack_septets(ud[header_len:], udl - header_septets, fill)
        return UserData(gsm7_decode(values), header)
    payload = bytes(ud[header_len:])
    if coding.alphabet is Alphabet.UCS2 and not coding.compressed:
        if len(payload) % 2:
            raise FrameError(
                f"UCS2 user data has an odd number of octets ({len(payload)})",
                offset=base + header_len,
                field="TP-UD",
            )
        return UserData(payload.decode("utf-16-be", "surrogatepass"), header)
    return UserData(payload, header)


def _read_user_data(reader: _Reader, dcs: int, udhi: bool) -> UserData:
    start = reader.pos
    udl = reader.octet("TP-UDL")
    size = user_data_size(udl, dcs)
    coding = data_coding(dcs)
    limit = (
        MAX_SEPTETS if coding.alphabet is Alphabet.GSM7 and not coding.compressed else MAX_OCTETS
    )
    if udl > limit:
        raise FrameError(f"TP-UDL {udl} exceeds {limit}", offset=start, field="TP-UDL")
    base = reader.pos
    return decode_user_data(reader.take(size, "TP-UD"), udl, dcs, udhi, base)


# ---------------------------------------------------------------------------
# TPDUs
# ---------------------------------------------------------------------------

MTI_DELIVER: Final = 0
MTI_SUBMIT: Final = 1
MTI_STATUS_REPORT: Final = 2


def _wire_alphabet(dcs: int) -> Alphabet:
    """How the user data is laid out: compressed data is octets whatever the alphabet."""
    coding = data_coding(dcs)
    return Alphabet.DATA8 if coding.compressed else coding.alphabet


def _check_user_data(dcs: int, user_data: UserData) -> None:
    coding = data_coding(dcs)
    wants_text = coding.alphabet is not Alphabet.DATA8 and not coding.compressed
    if wants_text != isinstance(user_data.body, str):
        kind = "text" if wants_text else "bytes"
        raise ValueError(f"TP-DCS 0x{dcs:02X} needs a body of {kind}")


def _byte(name: str, value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError(f"{name} is one octet (0..255), got {value}")


class _UserDataOf:
    """What a message with user data (SMS-DELIVER, SMS-SUBMIT) tells of it."""

    __slots__ = ()
    dcs: int
    user_data: UserData

    @property
    def coding(self) -> DataCoding:
        return data_coding(self.dcs)

    @property
    def body(self) -> str | bytes:
        return self.user_data.body


@attrs.frozen
class Deliver(_UserDataOf):
    """SMS-DELIVER: a short message from the network to the modem."""

    originator: Address
    timestamp: datetime
    user_data: UserData = UserData()
    dcs: int = 0
    pid: int = 0
    more_messages: bool = False
    loop_prevention: bool = False
    status_report: bool = False
    reply_path: bool = False
    smsc: Address | None = None

    def tpdu(self) -> bytes:
        _byte("TP-PID", self.pid)
        _byte("TP-DCS", self.dcs)
        _check_user_data(self.dcs, self.user_data)
        first = MTI_DELIVER
        first |= 0 if self.more_messages else 0x04
        first |= 0x08 if self.loop_prevention else 0
        first |= 0x20 if self.status_report else 0
        first |= 0x40 if self.user_data.header else 0
        first |= 0x80 if self.reply_path else 0
        udl, ud = encode_user_data(self.user_data, _wire_alphabet(self.dcs))
        return (
            bytes((first,))
            + encode_address(self.originator)
            + bytes((self.pid, self.dcs))
            + encode_timestamp(self.timestamp)
            + bytes((udl,))
            + ud
        )


@attrs.frozen
class Submit(_UserDataOf):
    """SMS-SUBMIT: a short message from the modem to the network. ``reference`` is TP-MR
    (most modems put their own there), ``status_report`` asks for a delivery report."""

    destination: Address
    user_data: UserData = UserData()
    dcs: int = 0
    pid: int = 0
    reference: int = 0
    validity: Validity | None = None
    reject_duplicates: bool = False
    status_report: bool = False
    reply_path: bool = False
    smsc: Address | None = None

    def tpdu(self) -> bytes:
        _byte("TP-PID", self.pid)
        _byte("TP-DCS", self.dcs)
        _byte("TP-MR", self.reference)
        _check_user_data(self.dcs, self.user_data)
        first = MTI_SUBMIT
        first |= 0x04 if self.reject_duplicates else 0
        vp = b""
        if isinstance(self.validity, timedelta):
            first |= VPF_RELATIVE << 3
            vp = bytes((relative_validity_octet(self.validity),))
        elif isinstance(self.validity, datetime):
            first |= VPF_ABSOLUTE << 3
            vp = encode_timestamp(self.validity)
        elif isinstance(self.validity, EnhancedValidity):
            first |= VPF_ENHANCED << 3
            vp = self.validity.octets
        first |= 0x20 if self.status_report else 0
        first |= 0x40 if self.user_data.header else 0
        first |= 0x80 if self.reply_path else 0
        udl, ud = encode_user_data(self.user_data, _wire_alphabet(self.dcs))
        return (
            bytes((first, self.reference))
            + encode_address(self.destination)
            + bytes((self.pid, self.dcs))
            + vp
            + bytes((udl,))
            + ud
        )


class DeliveryStatus(enum.Enum):
    DELIVERED = "delivered"
    PENDING = "pending"
    FAILED = "failed"


_STATUS_TEXT: Final = {
    0x00: "received by the recipient",
    0x01: "forwarded to the recipient, delivery not confirmed",
    0x02: "replaced by the service centre",
    0x20: "congestion (still trying)",
    0x21: "recipient busy (still trying)",
    0x22: "no response from recipient (still trying)",
    0x23: "service rejected (still trying)",
    0x24: "quality of service not available (still trying)",
    0x25: "error in recipient (still trying)",
    0x40: "remote procedure error",
    0x41: "incompatible destination",
    0x42: "connection rejected by recipient",
    0x43: "not obtainable",
    0x44: "quality of service not available",
    0x45: "no interworking available",
    0x46: "validity period expired",
    0x47: "deleted by originating entity",
    0x48: "deleted by service-centre administration",
    0x49: "message does not exist",
    0x60: "congestion (gave up)",
    0x61: "recipient busy (gave up)",
    0x62: "no response from recipient (gave up)",
    0x63: "service rejected (gave up)",
    0x64: "quality of service not available (gave up)",
    0x65: "error in recipient (gave up)",
}


def status_text(status: int) -> str:
    """What a TP-ST value means (TS 23.040 9.2.3.15)."""
    text = _STATUS_TEXT.get(status)
    if text is not None:
        return text
    return f"{delivery_status(status).value}, reserved or SC-specific status 0x{status:02X}"


def delivery_status(status: int) -> DeliveryStatus:
    """The TP-ST value's range: done, still being tried, or given up. Values the spec
    reserves outside the ranges count as failures."""
    if status < 0x20:
        return DeliveryStatus.DELIVERED
    if status < 0x40:
        return DeliveryStatus.PENDING
    return DeliveryStatus.FAILED


@attrs.frozen
class StatusReport:
    """SMS-STATUS-REPORT: what became of a submitted message (``reference`` is its TP-MR)."""

    reference: int
    recipient: Address
    timestamp: datetime
    discharge: datetime
    status: int = 0
    qualifier: bool = False
    more_messages: bool = False
    loop_prevention: bool = False
    pid: int | None = None
    dcs: int | None = None
    user_data: UserData | None = None
    smsc: Address | None = None

    @property
    def outcome(self) -> DeliveryStatus:
        return delivery_status(self.status)

    @property
    def status_text(self) -> str:
        return status_text(self.status)

    def tpdu(self) -> bytes:
        _byte("TP-MR", self.reference)
        _byte("TP-ST", self.status)
        first = MTI_STATUS_REPORT
        first |= 0 if self.more_messages else 0x04
        first |= 0x08 if self.loop_prevention else 0
        first |= 0x20 if self.qualifier else 0
        if self.user_data is not None and self.user_data.header:
            first |= 0x40
        out = (
            bytes((first, self.reference))
            + encode_address(self.recipient)
            + encode_timestamp(self.timestamp)
            + encode_timestamp(self.discharge)
            + bytes((self.status,))
        )
        indicator = 0
        tail = b""
        if self.pid is not None:
            _byte("TP-PID", self.pid)
            indicator |= 0x01
            tail += bytes((self.pid,))
        if self.dcs is not None:
            _byte("TP-DCS", self.dcs)
            indicator |= 0x02
            tail += bytes((self.dcs,))
        if self.user_data is not None:
            indicator |= 0x04
            dcs = self.dcs or 0
            _check_user_data(dcs, self.user_data)
            udl, ud = encode_user_data(self.user_data, _wire_alphabet(dcs))
            tail += bytes((udl,)) + ud
        if indicator:
            out += bytes((indicator,)) + tail
        return out


Tpdu = Deliver | Submit | StatusReport


class Direction(enum.Enum):
    """Which way a PDU travels: the message type indicator means different TPDUs each way."""

    TO_MODEM = "mt"  # SMS-DELIVER, SMS-STATUS-REPORT (and SMS-SUBMIT-REPORT)
    FROM_MODEM = "mo"  # SMS-SUBMIT (and SMS-DELIVER-REPORT, SMS-COMMAND)


def encode_pdu(tpdu: Tpdu, *, with_smsc: bool = True) -> bytes:
    """The PDU as ``AT+CMGS``/``AT+CMGW`` take it and ``AT+CMGR`` shows it: the SMSC field
    (``00`` when none) then the TPDU."""
    body = tpdu.tpdu()
    return (encode_smsc(tpdu.smsc) if with_smsc else b"") + body


def tpdu_length(pdu: bytes) -> int:
    """The length ``AT+CMGS=<length>`` wants: the PDU's octets less the SMSC field."""
    if not pdu:
        raise ValueError("empty PDU")
    return len(pdu) - 1 - pdu[0]


def decode_pdu(
    data: bytes | bytearray, *, with_smsc: bool = True, direction: Direction | None = None
) -> Tpdu:
    """Decode a PDU (SMSC field first unless ``with_smsc`` is false). Without a direction the
    message type decides: 0 DELIVER, 1 SUBMIT, 2 STATUS-REPORT (what a modem's store holds).
    Trailing octets after the user data are refused."""
    reader = _Reader(bytes(data))
    smsc = _read_smsc(reader) if with_smsc else None
    start = reader.pos
    first = reader.octet("first octet")
    mti = first & 0x03
    if mti == 3:
        raise FrameError("message type indicator 3 is reserved", offset=start, field="TP-MTI")
    if direction is Direction.FROM_MODEM and mti != MTI_SUBMIT:
        name = "SMS-DELIVER-REPORT" if mti == MTI_DELIVER else "SMS-COMMAND"
        raise FrameError(f"{name} is not supported", offset=start, field="TP-MTI")
    if direction is Direction.TO_MODEM and mti == MTI_SUBMIT:
        raise FrameError("SMS-SUBMIT-REPORT is not supported", offset=start, field="TP-MTI")
    tpdu: Tpdu
    if mti == MTI_DELIVER:
        tpdu = _read_deliver(reader, first, smsc)
    elif mti == MTI_SUBMIT:
        tpdu = _read_submit(reader, first, smsc)
    else:
        tpdu = _read_status_report(reader, first, smsc)
    if reader.left:
        raise FrameError(
            f"{reader.left} octet(s) after the end of the PDU",
            offset=reader.pos,
            field="TP-UD",
        )
    return tpdu


def decode_hex_pdu(
    text: str, *, with_smsc: bool = True, direction: Direction | None = None
) -> Tpdu:
    """Decode a PDU given as hex digits (the form AT commands carry)."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise FrameError(f"PDU is not hex: {text[:40]!r}", field="PDU")
    return decode_pdu(raw, with_smsc=with_smsc, direction=direction)


def _read_deliver(reader: _Reader, first: int, smsc: Address | None) -> Deliver:
    originator = _read_address(reader, "TP-OA")
    pid = reader.octet("TP-PID")
    dcs = reader.octet("TP-DCS")
    scts_at = reader.pos
    timestamp = decode_timestamp(reader.take(7, "TP-SCTS"), scts_at)
    user_data = _read_user_data(reader, dcs, bool(first & 0x40))
    return Deliver(
        originator,
        timestamp,
        user_data,
        dcs=dcs,
        pid=pid,
        more_messages=not first & 0x04,
        loop_prevention=bool(first & 0x08),
        status_report=bool(first & 0x20),
        reply_path=bool(first & 0x80),
        smsc=smsc,
    )


def _read_submit(reader: _Reader, first: int, smsc: Address | None) -> Submit:
    reference = reader.octet("TP-MR")
    destination = _read_address(reader, "TP-DA")
    pid = reader.octet("TP-PID")
    dcs = reader.octet("TP-DCS")
    vpf = (first >> 3) & 0x03
    validity: Validity | None = None
    vp_at = reader.pos
    if vpf == VPF_RELATIVE:
        validity = relative_validity(reader.octet("TP-VP"))
    elif vpf == VPF_ABSOLUTE:
        validity = decode_timestamp(reader.take(7, "TP-VP"), vp_at, "TP-VP")
    elif vpf == VPF_ENHANCED:
        validity = EnhancedValidity(bytes(reader.take(7, "TP-VP")))
    user_data = _read_user_data(reader, dcs, bool(first & 0x40))
    return Submit(
        destination,
        user_data,
        dcs=dcs,
        pid=pid,
        reference=reference,
        validity=validity,
        reject_duplicates=bool(first & 0x04),
        status_report=bool(first & 0x20),
        reply_path=bool(first & 0x80),
        smsc=smsc,
    )


def _read_status_report(reader: _Reader, first: int, smsc: Address | None) -> StatusReport:
    reference = reader.octet("TP-MR")
    recipient = _read_address(reader, "TP-RA")
    scts_at = reader.pos
    timestamp = decode_timestamp(reader.take(7, "TP-SCTS"), scts_at)
    dt_at = reader.pos
    discharge = decode_timestamp(reader.take(7, "TP-DT"), dt_at, "TP-DT")
    status = reader.octet("TP-ST")
    pid = dcs = None
    user_data = None
    if reader.left:
        indicator = reader.octet("TP-PI")
        # Further TP-PI octets follow while the extension bit is set (none is defined yet).
        extension = indicator
        while extension & 0x80:
            extension = reader.octet("TP-PI")
        if indicator & 0x01:
            pid = reader.octet("TP-PID")
        if indicator & 0x02:
            dcs = reader.octet("TP-DCS")
        if indicator & 0x04:
            user_data = _read_user_data(reader, dcs or 0, bool(first & 0x40))
    return StatusReport(
        reference,
        recipient,
        timestamp,
        discharge,
        status,
        qualifier=bool(first & 0x20),
        more_messages=not first & 0x04,
        loop_prevention=bool(first & 0x08),
        pid=pid,
        dcs=dcs,
        user_data=user_data,
        smsc=smsc,
    )


# ---------------------------------------------------------------------------
# Long messages: splitting for sending, joining on receipt
# ---------------------------------------------------------------------------

MAX_PARTS: Final = 255


def choose_alphabet(body: str | bytes) -> Alphabet:
    """8-bit for bytes, GSM 7-bit for text it can carry, UCS2 otherwise."""
    if isinstance(body, bytes):
        return Alphabet.DATA8
    return Alphabet.GSM7 if gsm7_encodable(body) else Alphabet.UCS2


def _capacity(alphabet: Alphabet, header_octets: int) -> int:
    """Room left in one part, in septets for GSM 7-bit, octets otherwise."""
    if alphabet is Alphabet.GSM7:
        return MAX_SEPTETS - (8 * header_octets + 6) // 7
    return MAX_OCTETS - header_octets


def _split_gsm7(text: str, room: int) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        cost = len(_GSM7_ENCODE[char])
        if used + cost > room:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    parts.append("".join(current))
    return parts


def _split_ucs2(text: str, room: int) -> list[str]:
    units = text.encode("utf-16-be", "surrogatepass")
    parts: list[str] = []
    pos = 0
    while pos < len(units):
        end = min(pos + room - room % 2, len(units))
        # Never end a part on the high half of a surrogate pair.
        if end < len(units) and 0xD8 <= units[end - 2] <= 0xDB:
            end -= 2
        parts.append(units[pos:end].decode("utf-16-be", "surrogatepass"))
        pos = end
    return parts or [""]


def split_body(body: str | bytes, alphabet: Alphabet, header_octets: int) -> list[str | bytes]:
    """``body`` cut into pieces that each fit one part with a header of ``header_octets``
    octets (the UDHL octet included); a body that fits one message is one piece."""
    if isinstance(body, bytes):
        if alphabet is not Alphabet.DATA8:
            raise ValueError("bytes can only be sent as 8-bit data")
        if len(body) <= MAX_OCTETS:
            return [body]
        room = _capacity(alphabet, header_octets)
        return [body[i : i + room] for i in range(0, len(body), room)]
    if alphabet is Alphabet.GSM7:
        if len(gsm7_encode(body)) <= MAX_SEPTETS:
            return [body]
        return list(_split_gsm7(body, _capacity(alphabet, header_octets)))
    if alphabet is Alphabet.UCS2:
        if len(body.encode("utf-16-be", "surrogatepass")) <= MAX_OCTETS:
            return [body]
        return list(_split_ucs2(body, _capacity(alphabet, header_octets)))
    raise ValueError("text cannot be sent as 8-bit data; give bytes")


def submit_parts(
    destination: Address | str,
    body: str | bytes,
    *,
    reference: int = 0,
    wide_reference: bool = False,
    alphabet: Alphabet | None = None,
    message_class: int | None = None,
    validity: Validity | None = None,
    status_report: bool = False,
    reject_duplicates: bool = False,
    smsc: Address | None = None,
) -> list[Submit]:
    """The SMS-SUBMITs that carry ``body``: one when it fits, else concatenated parts with an
    8-bit (or, with ``wide_reference``, 16-bit) concatenation ``reference``. The alphabet is
    chosen from the body unless given."""
    if isinstance(destination, str):
        destination = Address.parse(destination)
    alphabet = alphabet or choose_alphabet(body)
    if alphabet is Alphabet.GSM7 and isinstance(body, str):
        gsm7_encode(body)  # ValueError naming the first character it cannot carry
    limit = 0xFFFF if wide_reference else 0xFF
    if not 0 <= reference <= limit:
        raise ValueError(f"concatenation reference is 0..{limit}, got {reference}")
    header_octets = 1 + (6 if wide_reference else 5)
    pieces = split_body(body, alphabet, header_octets)
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"message needs {len(pieces)} parts, at most {MAX_PARTS} are possible")
    dcs = dcs_octet(alphabet, message_class)

    def submit(piece: str | bytes, header: tuple[InformationElement, ...]) -> Submit:
        return Submit(
            destination,
            UserData(piece, header),
            dcs=dcs,
            validity=validity,
            status_report=status_report,
            reject_duplicates=reject_duplicates,
            smsc=smsc,
        )

    if len(pieces) == 1:
        return [submit(pieces[0], ())]
    total = len(pieces)
    return [
        submit(piece, (Concat(reference, total, n, wide_reference).element(),))
        for n, piece in enumerate(pieces, 1)
    ]


@attrs.frozen
class Message:
    """A whole received message: one SMS-DELIVER, or the parts of a concatenated one
    joined in order."""

    sender: Address
    body: str | bytes
    timestamp: datetime
    parts: tuple[Deliver, ...]

    @property
    def text(self) -> str:
        """The body as text: 8-bit data read as Latin-1, broken surrogates replaced."""
        if isinstance(self.body, bytes):
            return self.body.decode("latin-1")
        return self.body.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def _join(bodies: Sequence[str | bytes]) -> str | bytes:
    if all(isinstance(b, bytes) for b in bodies):
        return b"".join(b for b in bodies if isinstance(b, bytes))
    return "".join(b if isinstance(b, str) else b.decode("latin-1") for b in bodies)


@attrs.define
class _Pending:
    first_seen: float
    parts: dict[int, Deliver] = attrs.field(factory=dict)


class Reassembler:
    """Joins the parts of concatenated messages, whatever order they arrive in. Parts are
    grouped by sender, reference and total; a duplicate part is dropped; groups not complete
    ``timeout`` seconds after their first part are given up by ``expire``."""

    def __init__(self, timeout: float = 24 * 3600.0) -> None:
        self.timeout = timeout
        self._pending: dict[tuple[str, int, int, bool], _Pending] = {}

    @property
    def pending(self) -> int:
        """Incomplete messages held."""
        return len(self._pending)

    def add(self, deliver: Deliver, now: float) -> Message | None:
        """Take one SMS-DELIVER; returns the whole message when it is complete."""
        concat = deliver.user_data.concat
        if concat is None:
            return Message(deliver.originator, deliver.body, deliver.timestamp, (deliver,))
        key = (str(deliver.originator), concat.reference, concat.total, concat.wide)
        group = self._pending.setdefault(key, _Pending(now))
        group.parts.setdefault(concat.sequence, deliver)
        if len(group.parts) < concat.total:
            return None
        del self._pending[key]
        parts = tuple(group.parts[n] for n in range(1, concat.total + 1))
        return Message(
            deliver.originator, _join([p.body for p in parts]), parts[0].timestamp, parts
        )

    def expire(self, now: float) -> list[tuple[Deliver, ...]]:
        """Drop groups older than the timeout; returns their parts (for the log)."""
        gone: list[tuple[Deliver, ...]] = []
        for key, group in list(self._pending.items()):
            if now - group.first_seen >= self.timeout:
                del self._pending[key]
                gone.append(tuple(group.parts[n] for n in sorted(group.parts)))
        return gone
