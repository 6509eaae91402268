"""The GPRS channel over real loopback sockets with simulated modems (fep.sim.gprs_modem) and
a real store (SQLite through the spool and router): 500 modems (200 in ``make test``,
`tests.scale`) that connect, identify by every rule and push, every push stored once;
modems that reconnect in the middle of a push; pull jobs over the pushed sessions while the
pushes go on; unknown modems under each policy;
garbage before registration; a half-open modem reaped; a TLS listener."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial import unittest

from fep.channels.gprs import GprsChannel, GprsSettings
from fep.channels.routes import Channels
from fep.directory import MeterDirectory
from fep.interfaces import IStore
from fep.model import Meter, Reading
from fep.protocols.dlms.context import DlmsContext
from fep.protocols.dlms.security import InvocationCounterGuard
from fep.protocols.registry import ProtocolRegistry
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from fep.store import open_store
from fep.store.counters import InvocationCounterFile
from fep.store.router import Router
from fep.store.spool import Spool
from tests.scale import scaled
from tests.store.test_router import stop_worker


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await sleep(0.05)


def imei(n: int) -> str:
    return f"35693803{n:07d}"


def spec_and_meter(n: int) -> tuple[ModemSpec, Meter]:
    """Modem n and its meter record: four ways of saying who it is, in turn.
    0: ASCII ID:<imei> line, DLMS meter, route gprs:imei=...
    1: binary registration (IMEI, ICCID, serial), IEC meter, route gprs:iccid=...
    2: no registration: its first ciphered DLMS push (system title), route gprs:system_title
    3: no registration: its first IEC readout (serial number), route gprs:serial=...
    Every tenth sends garbage (modem chatter) before it says who it is."""
    kind = n % 4
    serial = f"SIM{n:05d}"
    iccid = f"8986031876{n:010d}"
    title = b"FEP" + n.to_bytes(5, "big")
    garbage = b"AT+CGATT?\r\n+CGATT: 1\r\nOK\r\n\xff\x00" if n % 10 == 9 else b""
    dlms_md = {
        "dlms_server_system_title": title.hex(),
        "dlms_ek": EXAMPLE_EK.hex(),
        "dlms_ak": EXAMPLE_AK.hex(),
    }
    if kind == 0:
        spec = ModemSpec(imei(n), registration="ascii", meter="dlms", system_title=title,
                         garbage=garbage)
        meter = Meter(f"m{n}", "dlms", f"gprs:imei={imei(n)}", metadata=dlms_md)
    elif kind == 1:
        spec = ModemSpec(imei(n), iccid=iccid, serial=serial, registration="binary",
                         meter="iec62056-21", iec_address=f"{n}", garbage=garbage)
        meter = Meter(f"m{n}", "iec62056-21", f"gprs:iccid={iccid}", serial=serial)
    elif kind == 2:
        spec = ModemSpec(imei(n), registration="none", meter="dlms", system_title=title,
                         garbage=garbage)
        meter = Meter(f"m{n}", "dlms", f"gprs:system_title={title.hex()}", metadata=dlms_md)
    else:
        spec = ModemSpec(imei(n), serial=serial, registration="none", meter="iec62056-21",
                         iec_address=f"{n}", garbage=garbage)
        meter = Meter(f"m{n}", "iec62056-21", f"gprs:serial={serial}", serial=serial)
    return spec, meter


def below(n: int, count: int) -> int:
    """Modem ``n``, or where there are fewer than ``n + 1`` modems the highest one of the
    same kind and the same garbage turn (n mod 4 and n mod 10 kept: steps of 20)."""
    return n if n < count else n - 20 * ((n - count) // 20 + 1)


class LoopbackCase(unittest.TestCase):
    # A modem that reconnects leaves a muted (half-open) session behind: it is replaced once
    # silent past its heartbeat window (the live ones push every 0.3 s).
    settings = GprsSettings(identify_timeout=30.0, idle_timeout=60.0,
                            conflict="replace-when-silent", heartbeat_window=1.0)

    async def start(self, meters: list[Meter], settings: GprsSettings | None = None) -> None:
        workdir = Path(self.mktemp())
        workdir.mkdir()
        self.store: IStore = open_store(f"sqlite:{workdir}/fep.sqlite", reactor)
        await self.store.open()
        self.addCleanup(self.store.close)
        self.router = Router(Spool(workdir / "spool", reactor), self.store, reactor,
                             max_delay=0.02)
        self.addCleanup(stop_worker, self.router.spool)
        self.router.startService()
        self.addCleanup(self.router.stopService)
        await self.store.add_meters(meters)
        self.directory = MeterDirectory(self.store)
        await self.directory.refresh()
        counters = InvocationCounterFile(reactor, workdir / "counters.json")
        await counters.open()
        # A push a pull took in its last second leaves a write of the counters scheduled.
        self.addCleanup(counters.close)
        # The DLMS context a daemon gives its doors, through its protocol registry.
        self.protocols = ProtocolRegistry({"dlms": DlmsContext(counters)})
        self.channel = GprsChannel(
            reactor,
            settings or self.settings,
            sink=self.router,
            directory=self.directory,
            store=self.store,
            counters=InvocationCounterGuard(),
            protocol_for=self.protocols.protocol_for,
        )
        self.addCleanup(self.channel.close_all)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            self.channel.factory("tcp")
        )
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.channels = Channels(reactor)
        self.channels.register_scheme("gprs", self.channel.endpoint_for, backoff=False)
        self.modems: list[SimulatedGprsModem] = []
        self.addCleanup(self.close_modems)

    def close_modems(self) -> None:
        for modem in self.modems:
            modem.close()

    def modem(self, spec: ModemSpec) -> SimulatedGprsModem:
        # The modems' own ports come from 127.0.0.2: hundreds of ephemeral ports on
        # 127.0.0.1 could take one a test running alongside wants to listen on again.
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port,
                                      bindAddress=("127.0.0.2", 0))
        modem = SimulatedGprsModem(reactor, endpoint, spec)
        self.modems.append(modem)
        return modem

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for info in self.channel.sessions():
            out[info.state] = out.get(info.state, 0) + 1
        return out

    async def eventually_stored(
        self, pairs: list[tuple[Meter, SimulatedGprsModem]], timeout: float = 30
    ) -> dict[str, dict[datetime, int]]:
        """Each meter's stored readings by meter time, once every push a modem sent has
        arrived and is committed (or the timeout has passed: the caller compares)."""
        deadline = time.monotonic() + timeout
        while True:
            self.assertTrue(await self.router.flush(timeout))
            stored = {meter.id: await self.stored_times(meter.id) for meter, _ in pairs}
            if all(set(modem.pushes) <= set(stored[meter.id]) for meter, modem in pairs):
                return stored
            if time.monotonic() > deadline:
                return stored
            await sleep(0.1)

    async def stored_times(self, meter_id: str) -> dict[datetime, int]:
        """Readings stored for a meter, counted by meter time."""
        out: dict[datetime, int] = {}
        for r in await self.store.readings(meter_id):
            assert isinstance(r, Reading)
            if r.meter_time is not None:
                out[r.meter_time] = out.get(r.meter_time, 0) + 1
        return out


class FiveHundredModemsTests(LoopbackCase):
    timeout = 300

    async def test_500_modems_connect_identify_push_and_serve_pulls(self) -> None:
        count = scaled(500, 200)
        pairs = [spec_and_meter(n) for n in range(count)]
        await self.start([meter for _, meter in pairs])
        modems = [self.modem(spec) for spec, _ in pairs]
        await gatherResults([m.connect() for m in modems])
        await wait_for(lambda: self.states().get("attached", 0) == count, 60,
                       f"{count} modems to identify and attach")
        self.assertEqual(self.channel.stats.identified, count)
        self.assertEqual(self.channel.stats.garbage_bytes,
                         sum(len(spec.garbage) for spec, _ in pairs))

        scheduled = 8
        # Twenty modems push until the pulls are done (then they are stopped), however long
        # a busy machine makes them take; the others push eight times.
        chatty = modems[100:120]
        for m in modems:
            m.start(every=0.3, count=1_000_000 if m in chatty else scheduled)
        # Ten modems reconnect in the middle of a push, while everyone pushes.
        await sleep(0.35)
        movers = [modems[below(n, count)] for n in (3, 8, 13, 22, 41, 77, 102, 203, 306, 499)]
        await gatherResults([
            Deferred_from(m.reconnect_mid_push()) for m in movers
        ])
        await wait_for(lambda: self.channel.stats.replaced == len(movers), 30,
                       "the reconnected modems to replace their stale sessions")

        # Pull jobs over the pushed sessions while the pushes go on: 10 DLMS, 10 IEC.
        pulled = [pairs[n][1] for n in range(0, 80, 4)] + [pairs[n][1] for n in range(1, 80, 4)]
        pulled = pulled[:10] + pulled[20:30]
        for n in range(0, 40, 4):
            # These DLMS meters push the moment the pull's AARQ arrives, before answering.
            modems[n].spec.push_on_pull = True

        async def pull(meter: Meter) -> list[Any]:
            endpoint = self.channels.endpoint_for(meter.route)
            records: list[Any] = await self.protocols.protocol_for(meter.protocol).read(
                reactor, endpoint, meter, 10.0
            )
            return records

        results = await DeferredList([Deferred_from(pull(m)) for m in pulled],
                                     consumeErrors=True)
        failures = [(m.id, r.getErrorMessage()) for m, (ok, r) in zip(pulled, results,
                                                                       strict=True) if not ok]
        self.assertEqual(failures, [])
        for meter, (_, records) in zip(pulled, results, strict=True):
            self.assertTrue(records, f"{meter.id}: the pull read nothing")
            self.assertEqual({r.meter for r in records}, {meter.id})
        self.assertTrue(all(m.pushing for m in chatty), "the pushes ended before the pulls")
        before = [len(m.pushes) for m in chatty]
        await wait_for(lambda: all(len(m.pushes) > n for m, n in zip(chatty, before,
                                                                        strict=True)),
                       60, "a push of each chatty modem after the pulls")
        for m in chatty:
            m.stop()
        # At least the ten pushes made at the AARQs; scheduled ones may land in pulls too.
        self.assertGreaterEqual(self.channel.stats.pipe_pushes, 10)

        await wait_for(lambda: not any(m.pushing for m in modems), 60, "the pushes to end")
        stored = await self.eventually_stored([(meter, modem) for (_, meter), modem in
                                               zip(pairs, modems, strict=True)])

        # Every push of every modem stored once: the meter times stored are exactly the
        # pushes' times, each with the same number of readings as every other push of
        # its kind.
        per_push: dict[str, set[int]] = {"dlms": set(), "iec62056-21": set()}
        total = 0
        for (_, meter), modem in zip(pairs, modems, strict=True):
            self.assertEqual(sorted(stored[meter.id]), sorted(modem.pushes), meter.id)
            per_push[meter.protocol].update(stored[meter.id].values())
            total += sum(stored[meter.id].values())
        self.assertEqual({k: len(v) for k, v in per_push.items()},
                         {"dlms": 1, "iec62056-21": 1})
        expected = sum(
            len(modem.pushes) * next(iter(per_push[meter.protocol]))
            for (_, meter), modem in zip(pairs, modems, strict=True)
        )
        self.assertEqual(await self.store.count("readings"), expected)
        self.assertEqual(total, expected)
        # Scheduled pushes, the first push of modems it identifies, the movers' resent push,
        # the pushes made at the AARQs; the chatty modems pushed until they were stopped.
        quiet = [(spec, m) for (spec, _), m in zip(pairs, modems, strict=True)
                 if m not in chatty]
        self.assertEqual(
            sum(len(m.pushes) for _, m in quiet),
            len(quiet) * scheduled + sum(1 for spec, _ in quiet if spec.registration == "none")
            + sum(1 for m in movers if m not in chatty)
            + sum(1 for n in range(0, 40, 4) if modems[n] not in chatty),
        )

        # One live session per modem: the stale ones were replaced.
        self.assertEqual(self.channel.stats.replaced, len(movers))
        self.assertEqual(len(self.channel.sessions()), count)
        self.assertEqual(self.channel.stats.pipes, len(pulled))


def Deferred_from(coroutine: Awaitable[Any]) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)  # type: ignore[arg-type]


class PolicyOverTcpTests(LoopbackCase):
    """Unknown modems over real sockets, the register policy storing a real meter record."""

    async def start_with(self, unknown: str) -> None:
        await self.start([], GprsSettings(unknown=unknown))

    async def test_register_stores_the_meter_record_from_a_binary_registration(self) -> None:
        await self.start_with("register")
        spec = ModemSpec(imei(7001), iccid="89860318760000007001", serial="NEW7001",
                         registration="binary", meter="dlms", system_title=b"FEPNEW01")
        modem = self.modem(spec)
        await modem.connect()
        await wait_for(lambda: self.states().get("attached") == 1, 10, "registration")
        meter = await self.store.meter("NEW7001")
        assert meter is not None
        self.assertEqual((meter.protocol, meter.route, meter.serial),
                         ("dlms", f"gprs:imei={imei(7001)}", "NEW7001"))
        self.assertEqual(meter.metadata["gprs_iccid"], spec.iccid)
        self.assertIs(self.directory.get("NEW7001"), self.directory.by_modem(
            f"imei={imei(7001)}")[0])

    async def test_register_from_a_pushed_readout_stores_its_readings(self) -> None:
        await self.start_with("register")
        spec = ModemSpec(imei(7002), serial="LGZ7002", registration="none",
                         meter="iec62056-21", iec_address="7002")
        modem = self.modem(spec)
        await modem.connect()
        modem.start(every=0.05, count=2)
        await wait_for(lambda: not modem.pushing, 10, "the pushes")
        await wait_for(lambda: self.channel.stats.registered == 1, 10, "the registration")
        meter = await self.store.meter("LGZ7002")
        assert meter is not None
        self.assertEqual((meter.protocol, meter.route), ("iec62056-21", "gprs:serial=LGZ7002"))
        stored = await self.eventually_stored([(meter, modem)])
        self.assertEqual(sorted(stored["LGZ7002"]), sorted(modem.pushes))

    async def test_quarantine_lists_the_modem_and_stores_nothing(self) -> None:
        await self.start_with("quarantine")
        modem = self.modem(ModemSpec(imei(7003), registration="ascii", meter="dlms"))
        await modem.connect()
        modem.start(every=0.05, count=3)
        await wait_for(lambda: not modem.pushing, 10, "the pushes")
        (info,) = self.channel.sessions()
        self.assertEqual((info.state, info.modem), ("quarantined", f"imei={imei(7003)}"))
        self.assertGreater(info.bytes_in, 300)
        self.assertTrue(await self.router.flush(10))
        self.assertEqual(await self.store.count("readings"), 0)
        self.assertEqual(await self.store.count("meters"), 0)

    async def test_reject_closes_the_connection(self) -> None:
        await self.start_with("reject")
        modem = self.modem(ModemSpec(imei(7004), registration="ascii", meter="dlms"))
        connection = await modem.connect()
        await connection.lost
        self.assertEqual(self.channel.stats.rejected, 1)
        await wait_for(lambda: not self.channel.sessions(), 5, "the session to go")


class HalfOpenTests(LoopbackCase):
    async def test_half_open_modem_is_reaped_and_its_reconnect_served(self) -> None:
        spec, meter = spec_and_meter(0)
        await self.start([meter], GprsSettings(idle_timeout=0.5))
        modem = self.modem(spec)
        # The idle timer runs from the modem's last byte, which came after this: the reap
        # is at least the timeout later, however late this test sees the attach.
        began = time.monotonic()
        await modem.connect()
        await wait_for(lambda: self.states().get("attached") == 1, 10, "attach")
        modem.go_half_open()
        await wait_for(lambda: not self.channel.sessions(), 10, "the idle timeout")
        self.assertGreaterEqual(time.monotonic() - began, 0.5)
        self.assertEqual(self.channel.stats.idle_closed, 1)
        endpoint = self.channels.endpoint_for(meter.route)
        with self.assertRaises(Exception) as caught:
            await self.protocols.protocol_for("dlms").read(reactor, endpoint, meter, 5.0)
        self.assertIn("not connected", str(caught.exception))
        # It dials in again: served.
        modem.connection = None
        await modem.connect()
        await wait_for(lambda: self.states().get("attached") == 1, 10, "attach again")
        records = await self.protocols.protocol_for("dlms").read(
            reactor, self.channels.endpoint_for(meter.route), meter, 5.0
        )
        self.assertTrue(records)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway key and certificate for localhost."""
    from datetime import UTC, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TlsListenerTests(LoopbackCase):
    async def test_modem_over_tls_identifies_pushes_and_serves_a_pull(self) -> None:
        from twisted.internet.endpoints import serverFromString, wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        spec, meter = spec_and_meter(1)  # binary registration, IEC meter
        await self.start([meter])
        tls_dir = Path(self.mktemp())
        tls_dir.mkdir()
        key, cert = self_signed(tls_dir)
        port = await serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        ).listen(self.channel.factory("ssl"))
        self.addCleanup(port.stopListening)
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(cert.read_bytes())
        )
        endpoint = wrapClientTLS(
            options, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        )
        modem = SimulatedGprsModem(reactor, endpoint, spec)
        self.modems.append(modem)
        await modem.connect()
        modem.start(every=0.05, count=2)
        await wait_for(lambda: not modem.pushing, 10, "the pushes")
        stored = await self.eventually_stored([(meter, modem)])
        self.assertEqual(sorted(stored[meter.id]), sorted(modem.pushes))
        records = await self.protocols.protocol_for(meter.protocol).read(
            reactor, self.channels.endpoint_for(meter.route), meter, 5.0
        )
        self.assertEqual({r.meter for r in records}, {meter.id})
        (info,) = self.channel.sessions()
        self.assertEqual((info.listener, info.modem), ("ssl", f"imei={spec.imei}"))
