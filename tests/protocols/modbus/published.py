"""Modbus bytes from published documents, each with its source.

PDU examples: MODBUS Application Protocol Specification V1.1b3 (modbus.org, 2012), section 6
(one example request/response per function code) and section 7 (exception response).
RTU frame: Modicon Modbus Protocol Reference Guide PI-MBUS-300 Rev. J (1996), chapter 2,
"Read Holding Registers" query to slave 17 (0x11) with its CRC; CRC example: the same guide,
appendix C ("CRC generation", message 02 07 -> CRC bytes 41 12).
CRC check value: the CRC RevEng catalogue (Greg Cook), CRC-16/MODBUS, check=0x4b37 over
the ASCII string "123456789".
"""

from __future__ import annotations

# name -> (request PDU, response PDU), Modbus Application Protocol V1.1b3 section 6/7.
PDU_EXAMPLES: dict[str, tuple[bytes, bytes]] = {
    # 6.1 read coils 20-38
    "read_coils": (bytes.fromhex("01 0013 0013"), bytes.fromhex("01 03 CD 6B 05")),
    # 6.2 read discrete inputs 197-218
    "read_discrete_inputs": (bytes.fromhex("02 00C4 0016"), bytes.fromhex("02 03 AC DB 35")),
    # 6.3 read holding registers 108-110
    "read_holding_registers": (
        bytes.fromhex("03 006B 0003"),
        bytes.fromhex("03 06 022B 0000 0064"),
    ),
    # 6.4 read input register 9
    "read_input_registers": (bytes.fromhex("04 0008 0001"), bytes.fromhex("04 02 000A")),
    # 6.5 write single coil 173 ON
    "write_single_coil": (bytes.fromhex("05 00AC FF00"), bytes.fromhex("05 00AC FF00")),
    # 6.6 write single register 2 = 3
    "write_single_register": (bytes.fromhex("06 0001 0003"), bytes.fromhex("06 0001 0003")),
    # 6.11 write 10 coils from 20
    "write_multiple_coils": (
        bytes.fromhex("0F 0013 000A 02 CD 01"),
        bytes.fromhex("0F 0013 000A"),
    ),
    # 6.12 write registers 2 and 3 = 000A 0102
    "write_multiple_registers": (
        bytes.fromhex("10 0001 0002 04 000A 0102"),
        bytes.fromhex("10 0001 0002"),
    ),
    # 7: read coils at 1185 (0x04A1) refused with exception 02, illegal data address
    "exception": (bytes.fromhex("01 04A1 0001"), bytes.fromhex("81 02")),
}

# PI-MBUS-300 Rev. J: query of slave 17 for holding registers 40108..40110, CRC 76 87.
RTU_READ_HOLDING_QUERY = bytes.fromhex("11 03 006B 0003 7687")
# PI-MBUS-300 Rev. J appendix C: message 02 07, CRC sent as 41 12 (value 0x1241).
CRC_EXAMPLE = (bytes.fromhex("0207"), 0x1241)
# CRC RevEng catalogue, CRC-16/MODBUS.
CRC_CHECK = (b"123456789", 0x4B37)
