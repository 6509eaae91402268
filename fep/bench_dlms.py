"""DLMS rows of `make bench`: decode rates of a 13-value Data-Notification and of a GET
response carrying a 96-row load profile, measured side by side with gurux-dlms decoding the
same bytes (run in a child process from tests/bench, since fep never imports gurux), and
end-to-end pushed readings committed to a store per second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fep.model import Meter, ObisCode, Unit
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr, wrapper
from fep.protocols.dlms.axdr import CosemDateTime
from fep.protocols.dlms.cosem import ScalerUnit, profile_blocks
from fep.protocols.dlms.push import decode_push

if TYPE_CHECKING:
    from fep.reactors import IFepReactor

ROOT = Path(__file__).resolve().parent.parent
NOTIFICATION_CODES = (
    "1.0.1.8.0.255",
    "1.0.2.8.0.255",
    "1.0.3.8.0.255",
    "1.0.4.8.0.255",
    "1.0.1.7.0.255",
    "1.0.2.7.0.255",
    "1.0.32.7.0.255",
    "1.0.52.7.0.255",
    "1.0.72.7.0.255",
    "1.0.31.7.0.255",
    "1.0.51.7.0.255",
    "1.0.71.7.0.255",
    "1.0.14.7.0.255",
)


def notification_frame() -> bytes:
    """A wrapper frame with a Data-Notification of 13 registers {name, value, scaler_unit}."""
    wh = ScalerUnit(-1, Unit.by_code(30)).to_data()
    items = [
        axdr.structure(
            axdr.octet_string(ObisCode.parse(c).to_bytes()),
            axdr.double_long_unsigned(100_000 + i),
            wh,
        )
        for i, c in enumerate(NOTIFICATION_CODES)
    ]
    stamp = CosemDateTime.from_datetime(datetime(2024, 1, 1, tzinfo=UTC))
    apdu = A.encode_apdu(A.DataNotification(axdr.array(items), stamp))
    return wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16, apdu))


def profile_frame() -> bytes:
    """A wrapper frame with a GET response carrying one day of 15-minute rows (96)."""
    from fep.sim import dlms_meter as sim

    now = datetime(2024, 5, 2, tzinfo=UTC)
    meter = sim.SimulatedDlmsMeter(now=lambda: now, history=timedelta(days=1))
    rows = meter.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 2), None)
    assert isinstance(rows, axdr.Data) and len(rows) == 96
    apdu = A.encode_apdu(A.GetResponse(A.GetResult(data=rows)))
    return wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16, apdu))


def aare_bytes() -> bytes:
    """The Green Book AARE accepting an LN association (InitiateResponse: max PDU 500)."""
    from fep.protocols.dlms import acse

    response = acse.InitiateResponse(acse.Conformance(0x00501F), 500)
    return acse.encode_aare(
        acse.Aare(acse.ApplicationContext.LN, 0, user_information=response.encode())
    )


def rate(work: Callable[[], object], seconds: float = 2.0) -> float:
    """Calls of ``work`` per second of this process's CPU time (the machine is shared: CPU
    time counts the work, not the waits for a core)."""
    count = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        work()
        count += 1
    return count / (time.process_time() - started)


def _apdu(frame: bytes) -> A.Apdu:
    (decoded,) = wrapper.WrapperDecoder().receive(frame)
    return A.decode_apdu(decoded.apdu)


def fep_cases() -> dict[str, Callable[[], object]]:
    """What is measured, by name: decoding the frames to values, and to records."""
    from fep.protocols.dlms import acse
    from fep.sim import dlms_meter as sim

    note, profile = notification_frame(), profile_frame()
    units = {sim.ACTIVE_IMPORT: ScalerUnit(0, sim.WH), sim.ACTIVE_EXPORT: ScalerUnit(0, sim.WH)}
    columns = list(sim.LOAD_PROFILE_COLUMNS)

    def note_records() -> object:
        message = _apdu(note)
        assert isinstance(message, A.DataNotification)
        return decode_push("m", message)

    def profile_records() -> object:
        message = _apdu(profile)
        assert isinstance(message, A.GetResponse) and message.result.data is not None
        return profile_blocks("m", message.result.data, columns, 900, units)

    aare = aare_bytes()

    def association() -> object:
        # What the client does with a meter's AARE: ACSE, the verdict, the InitiateResponse.
        decoded = acse.decode_aare(aare)
        acse.check_aare(decoded)
        return acse.decode_initiate_response(decoded.user_information or b"")

    return {
        "aare": association,
        "notification": lambda: _apdu(note),
        "notification_records": note_records,
        "profile": lambda: _apdu(profile),
        "profile_records": profile_records,
    }


def fep_rates(seconds: float = 2.0) -> dict[str, float]:
    return {name: rate(work, seconds) for name, work in fep_cases().items()}


# The gurux-dlms case each fep case is set beside (its decode to values).
GURUX_CASE = {
    "aare": "aare",
    "notification": "notification",
    "notification_records": "notification",
    "profile": "profile",
    "profile_records": "profile",
}


def side_by_side(
    rounds: int = 5, seconds: float = 0.5
) -> tuple[dict[str, float], dict[str, float] | None]:
    """fep's rates and gurux-dlms's, measured in turns case by case (fep, then gurux-dlms in
    its child process, ``rounds`` times), the best turn of each: on a shared machine the
    load changes from second to second, and turns close in time see the same load."""
    cases = fep_cases()
    ours: dict[str, float] = {}
    child = _gurux_child()
    theirs: dict[str, float] | None = {} if child is not None else None
    try:
        for _ in range(rounds):
            for name, work in cases.items():
                ours[name] = max(ours.get(name, 0.0), rate(work, seconds))
                gurux = GURUX_CASE[name]
                if child is not None and theirs is not None and name == gurux:
                    assert child.stdin is not None and child.stdout is not None
                    child.stdin.write(json.dumps({"case": gurux, "seconds": seconds}) + "\n")
                    child.stdin.flush()
                    measured = json.loads(child.stdout.readline())["rate"]
                    theirs[gurux] = max(theirs.get(gurux, 0.0), measured)
    finally:
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=60)
    return ours, theirs


def _gurux_child() -> subprocess.Popen[str] | None:
    """gurux-dlms ready to decode the same frames in a child process (None if it cannot)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.gurux_decode"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    frames = {
        "notification": notification_frame().hex(),
        "profile": profile_frame().hex(),
        "aare": aare_bytes().hex(),
    }
    try:
        child.stdin.write(json.dumps(frames) + "\n")
        child.stdin.flush()
    except BrokenPipeError:
        pass
    if child.stdout.readline().strip() != "ready":
        child.kill()
        _, errors = child.communicate(timeout=60)
        print(f"bench: gurux-dlms not measured: {errors.strip()[-300:]}", file=sys.stderr)
        return None
    return child


def _fixed(at: datetime) -> Callable[[], datetime]:
    return lambda: at


async def push_ingest_rate(
    reactor: IFepReactor, url: str, workdir: Path, meters: int = 200, pushes: int = 50
) -> float:
    """Readings per second from ciphered Data-Notifications arriving over TCP to rows
    committed in ``url`` (decipher, decode, spool, store)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from fep.protocols.dlms.security import SecurityKeys
    from fep.protocols.dlms.server import DlmsServer, ServerSettings
    from fep.protocols.dlms.session import DlmsPushFactory
    from fep.sim.dlms_meter import SimulatedDlmsMeter
    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.settings import write_batch
    from fep.store.spool import Spool

    keys = SecurityKeys(bytes(range(16)), bytes(range(0xD0, 0xE0)))
    titles = [b"FEPB" + n.to_bytes(4, "big") for n in range(meters)]
    records = {
        t: Meter(
            f"b{n}",
            "dlms",
            "tcp:",
            metadata={
                "dlms_ek": keys.block_cipher_key.hex(),
                "dlms_ak": keys.authentication_key.hex(),
            },
        )
        for n, t in enumerate(titles)
    }
    store = open_store(url, reactor)
    await store.open()
    spool = Spool(workdir / "spool-dlms", reactor)
    router = Router(spool, store, reactor, batch_size=5000,
                    write_batch=write_batch(url, 5000), max_delay=0.01)
    router.startService()
    factory = DlmsPushFactory(router, lambda title, port: records.get(title) if title else None)
    # listenTCP is declared with a ServerFactory; any protocol factory serves.
    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
    # Pre-build every push (each meter's clock one period further each time, so every
    # reading is new) so the sender costs nothing while measured.
    frames = []
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for n, title in enumerate(titles):
        for k in range(pushes):
            at = base + timedelta(minutes=15 * k)
            meter = SimulatedDlmsMeter(serial=f"B{n}", system_title=title, now=_fixed(at))
            server = DlmsServer(
                meter, ServerSettings(system_title=title, keys=keys), invocation_counter=k + 1
            )
            frames.append(
                wrapper.encode_wrapper(wrapper.WrapperFrame(1, 1, server.push(meter.push_body())))
            )
    expected = len(frames) * 5
    connection: Any = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(Protocol)
    )
    started = time.perf_counter()
    connection.transport.write(b"".join(frames))
    while await store.count("readings") < expected:
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.05, lambda: None)
    elapsed = time.perf_counter() - started
    connection.transport.loseConnection()
    await port.stopListening()
    await router.stopService()
    await store.close()
    if factory.stats.accepted != len(frames):
        raise RuntimeError(f"{factory.stats} for {len(frames)} pushes")
    return expected / elapsed
