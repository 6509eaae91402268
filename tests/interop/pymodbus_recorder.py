"""A pulse counter module's registers (etc/devices/generic-counter16.ini) held by pymodbus's
simulator data model (``SimDevice``/``SimData``, pymodbus 3.16, test-only: fep never imports
pymodbus), served over Modbus TCP or RTU on a serial device, as a child process of the peer
tests. It prints ``ready`` once serving; writes are printed as ``write FC ADDRESS VALUES``
lines, so the test sees what reached the server.

``python tests/interop/pymodbus_recorder.py tcp PORT`` or ``... rtu DEVICE BAUD``
"""

from __future__ import annotations

import asyncio
import sys

UNIT = 3
# Holding 0..5: the clock as year, month, day, hour, minute, second of Europe/Berlin time.
CLOCK = [2024, 3, 1, 13, 30, 15]
# Holding 100/101: the 16-bit pulse counters of inputs 1 and 2.
COUNTERS = [65530, 1234]
# Input 0/1: supply 230.1 V (0.1 V), battery 3.62 V (0.01 V).
VOLTAGES = [2301, 362]
# Discrete inputs 0..4: door, key contact, tamper, power fail, low battery.
STATUS = [True, False, True, False, True]
# Coils 0..15 and holding 200..209 for the function-code round trips.
COILS = [True, False, False, True, True, False, True, False] * 2
SCRATCH = [0] * 10


def devices():  # type: ignore[no-untyped-def]
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def action(function_code, start_address, address, count, registers, set_values):  # type: ignore[no-untyped-def]
        if set_values is not None:
            values = [int(v) for v in set_values]
            print(f"write {function_code} {address} {values}", flush=True)
        return None

    pad = [False] * (16 - len(STATUS))
    return SimDevice(
        id=UNIT,
        simdata=(
            [SimData(0, values=COILS, datatype=DataType.BITS)],
            [SimData(0, values=STATUS + pad, datatype=DataType.BITS)],
            [
                SimData(0, values=CLOCK, datatype=DataType.REGISTERS),
                SimData(100, values=COUNTERS, datatype=DataType.REGISTERS),
                SimData(200, values=SCRATCH, datatype=DataType.REGISTERS),
            ],
            [SimData(0, values=VOLTAGES, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )


async def serve(argv: list[str]) -> None:
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer

    if argv[0] == "tcp":
        server = ModbusTcpServer(devices(), address=("127.0.0.1", int(argv[1])))
    else:
        # 8N1 here: pyserial cannot set a timeout on a pty opened with even parity
        # (tcsetattr gives EINVAL). A pty carries bytes whatever the parity, and fep's side
        # keeps 8E1, the Modbus serial line default.
        server = ModbusSerialServer(devices(), port=argv[1], baudrate=int(argv[2]),
                                    parity="N", bytesize=8, stopbits=1)
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
