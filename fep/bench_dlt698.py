"""DL/T 698.45 rows of `make bench`: decode rates of a GET-Response-NormalList frame (the
default read: energy, voltages, currents, power, power factor, frequency, clock) and of a
GET-Response-Record frame with one day of 15-minute frozen rows (96), measured side by side
with the dlt698 package decoding the same bytes (in a child process from tests/bench, since
fep never imports it)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fep.bench_dlms import rate
from fep.protocols.dlt698.apdu import GetKind, GetRecord, GetRequest, GetResponse, decode_apdu
from fep.protocols.dlt698.client import DEFAULT_ITEMS
from fep.protocols.dlt698.data import CSD, OAD, Data, selector2
from fep.protocols.dlt698.frames import Frame, FrameDecoder
from fep.protocols.dlt698.objects import readings, record_records

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 0, 53, 20, tzinfo=UTC)


def _answer(request: GetRequest) -> bytes:
    from fep.sim.dlt698 import SimulatedDlt698Meter

    sim = SimulatedDlt698Meter(clock=NOW.timestamp, require_connect=False)
    response = sim.respond(request)
    assert response is not None
    (frame,) = sim._reply(Frame(0x43, sim.server, 0, b""), response)
    return frame.encode()


def normal_list_frame() -> bytes:
    return _answer(GetRequest(GetKind.NORMAL_LIST, 1, DEFAULT_ITEMS))


def record_frame() -> bytes:
    from fep.sim.dlt698 import METER_TZ

    # The day before NOW, on the meter's clock: 96 rows of its 15-minute table.
    start = Data.date_time_s((NOW - timedelta(days=1)).astimezone(METER_TZ))
    end = Data.date_time_s(NOW.astimezone(METER_TZ) + timedelta(seconds=1))
    record = GetRecord(OAD(0x5002, 2), selector2(OAD(0x2021, 2), start, end),
                       (CSD(oad=OAD(0x2021, 2)), CSD(oad=OAD(0x0010, 2, 1)),
                        CSD(oad=OAD(0x0020, 2, 1))))  # fmt: skip
    return _answer(GetRequest(GetKind.RECORD, 1, records=(record,)))


def _apdu(frame: bytes) -> GetResponse:
    (decoded,) = FrameDecoder().receive(frame)
    apdu = decode_apdu(decoded.data)
    assert isinstance(apdu, GetResponse)
    return apdu


def fep_rates() -> dict[str, float]:
    normal, record = normal_list_frame(), record_frame()
    assert len(_apdu(record).records[0].rows or ()) == 96

    def normal_records() -> object:
        return [readings(r, meter="m", tz=UTC, received=NOW) for r in _apdu(normal).results]

    def record_blocks() -> object:
        return record_records(_apdu(record).records[0], meter="m", tz=UTC, received=NOW,
                              period=timedelta(minutes=15))  # fmt: skip

    return {
        "normal": rate(lambda: _apdu(normal)),
        "normal_records": rate(normal_records),
        "record": rate(lambda: _apdu(record)),
        "record_records": rate(record_blocks),
    }


def peer_rates() -> dict[str, float] | None:
    """The dlt698 package's rates on the same frames (None when it is not installed)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.dlt698_decode"],
        input=json.dumps({"normal": normal_list_frame().hex(), "record": record_frame().hex()}),
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"bench: dlt698 package not measured: {done.stderr.strip()[-300:]}",
              file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(done.stdout)
    return result
