"""Acceptance (issue 3): a third-party DLMS client, gurux-dlms (PyPI, GPLv2, test-only),
reads fep's simulated meter over the wrapper and over HDLC, with no security, LLS, and
HLS-GMAC with suite-0 ciphering: the object list, a register with scaler and unit, the clock
and a load profile by range. fep's own client reads the same meter over the same link and
gets the same values. Wrong credentials are refused in a way gurux understands."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.model import IntervalBlock, Meter, ObisCode, Reading
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.protocols.dlms.session import DlmsProtocol, open_session
from fep.protocols.dlms.settings import settings_for
from fep.sim import dlms_meter as sim
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory

try:
    from tests.interop import gurux_client as gx
except ImportError as e:  # pragma: no cover - the test extra is not installed
    gx = None  # type: ignore[assignment]
    MISSING = f"gurux-dlms is not installed ({e}); pip install -e '.[test]'"
else:
    MISSING = ""

NOW = datetime(2024, 5, 2, 10, 7, 12, tzinfo=UTC)
START, END = NOW - timedelta(hours=2), NOW
# The load profile entries in [START, END]: every 15 minutes from 08:15 to 10:00.
PROFILE_TIMES = [
    datetime(2024, 5, 2, 8, 15, tzinfo=UTC) + k * timedelta(minutes=15) for k in range(8)
]
TITLE = bytes.fromhex("4D4D4D0000BC614E")
PASSWORD = b"12345678"
SECURITY: dict[str, dict[str, Any]] = {
    "none": {},
    "low": {"auth": "low", "password": PASSWORD},
    "high-gmac": {"auth": "high-gmac", "ek": EXAMPLE_EK, "ak": EXAMPLE_AK},
}
FEP_METADATA: dict[str, dict[str, str]] = {
    "none": {},
    "low": {"dlms_auth": "low", "dlms_password": PASSWORD.decode()},
    "high-gmac": {
        "dlms_auth": "high-gmac",
        "dlms_ek": EXAMPLE_EK.hex(),
        "dlms_ak": EXAMPLE_AK.hex(),
    },
}
# AARQ/AARE fragments (Green Book): application context name LN / LN with ciphering, the
# mechanism name the AARE answers with, and the accepted association-result.
CONTEXT = {
    "none": bytes.fromhex("a109060760857405080101"),
    "low": bytes.fromhex("a109060760857405080101"),
    "high-gmac": bytes.fromhex("a109060760857405080103"),
}
MECHANISM = {
    "low": bytes.fromhex("890760857405080201"),
    "high-gmac": bytes.fromhex("890760857405080205"),
}
ACCEPTED = bytes.fromhex("a203020100")
PLAIN_TAGS = {0xC0, 0xC1, 0xC3, 0xC4, 0xC5, 0xC7}  # get/set/action request/response
GLO_TAGS = {0xC8, 0xC9, 0xCB, 0xCC, 0xCD, 0xCF}  # the same, glo-ciphered
# HDLC control fields: SNRM and DISC from the client, UA from the meter (all with P/F set).
SNRM, DISC, UA = 0x93, 0x53, 0x73
LOAD_PROFILE_COLUMNS = [
    (8, "0.0.1.0.0.255", 2),
    (1, "0.0.96.10.1.255", 2),
    (3, "1.0.1.8.0.255", 2),
    (3, "1.0.2.8.0.255", 2),
]


def gurux_session(port: int, hdlc: bool, security: str) -> dict[str, Any]:
    """Everything gurux reads, in a thread (blocking sockets)."""
    assert gx is not None
    with redirect_stdout(io.StringIO()):  # gurux prints "Encryption is applied."
        reader = gx.GuruxMeterReader(port, hdlc=hdlc, **SECURITY[security])
        try:
            reader.associate()
            objects = reader.object_list()
            energy = reader.register("1.0.1.8.0.255")
            voltage = reader.register("1.0.32.7.0.255")
            clock = reader.clock()
            period = reader.capture_period("1.0.99.1.0.255")
            rows = reader.profile("1.0.99.1.0.255", START, END)
            reader.release()
        finally:
            reader.close()
    return {
        "objects": {(int(o.objectType), o.version, o.logicalName) for o in objects},
        "energy": (energy[0], energy[1], int(energy[2])),
        "voltage": (voltage[0], voltage[1], int(voltage[2])),
        "clock": clock.value.astimezone(UTC),
        "period": period,
        "columns": reader.columns,
        "rows": [(r[0].value.astimezone(UTC), r[1], r[2], r[3]) for r in rows],
        "sent": bytes(reader.sent),
        "received": bytes(reader.received),
    }


def gurux_refused(port: int, hdlc: bool, options: dict[str, Any]) -> tuple[str, bytes]:
    """Try to associate; return gurux's error and the AARE it got."""
    assert gx is not None
    with redirect_stdout(io.StringIO()):
        reader = gx.GuruxMeterReader(port, hdlc=hdlc, **options)
        try:
            reader.associate()
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        else:
            raise AssertionError("gurux associated with wrong credentials")
        finally:
            reader.close()
    return error, gx.apdus(bytes(reader.received), hdlc)[-1]


def security_control(apdu: bytes) -> int:
    """The security control byte of a glo-ciphered APDU (after the tag and A-XDR length)."""
    n = apdu[1] & 0x7F if apdu[1] & 0x80 else 0
    return apdu[2 + n]


class GuruxReadsTheSimulatorTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        if MISSING:
            if os.environ.get("CI"):
                self.fail(MISSING)  # CI installs the test extra: a missing peer is a failure
            raise unittest.SkipTest(MISSING)

    def serve(self, hdlc: bool, security: str) -> DlmsMeterServerFactory:
        meter = sim.SimulatedDlmsMeter(now=lambda: NOW)
        settings = ServerSettings(
            system_title=TITLE,
            password=PASSWORD,
            keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK),
            allow_lowest=security == "none",
        )
        factory = DlmsMeterServerFactory(meter, settings, hdlc=hdlc)
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        return factory

    def fep_meter(self, hdlc: bool, security: str, **extra: str) -> Meter:
        return Meter(
            "m1",
            "dlms",
            f"tcp:host=127.0.0.1:port={self.port}",
            metadata={
                **FEP_METADATA[security],
                "dlms_link": "hdlc" if hdlc else "wrapper",
                "dlms_objects": "3/1.0.1.8.0.255/2,3/1.0.32.7.0.255/2,8/0.0.1.0.0.255/2",
                "dlms_profile": "1.0.99.1.0.255",
                "dlms_from": START.isoformat(),
                "dlms_to": END.isoformat(),
                **extra,
            },
        )

    def endpoint(self) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)

    async def fep_object_list(self, hdlc: bool, security: str) -> set[tuple[int, int, str]]:
        """fep's session API: associate, read the object list, release."""
        # Its own system title: the meter refuses a counter it has seen from a title, and
        # `fep read` below starts its counters afresh.
        meter = self.fep_meter(hdlc, security, dlms_system_title="4645500000000002")
        client, link = settings_for(meter)
        session = await open_session(reactor, self.endpoint(), client, link, timeout=5)
        await session.associate()
        entries = await session.object_list()
        await session.release()
        return {(e.class_id, e.version, dotted(e.logical_name)) for e in entries}

    def check_wire(self, theirs: dict[str, Any], hdlc: bool, security: str) -> None:
        """What gurux and the simulator said to each other, APDU by APDU."""
        assert gx is not None
        requests = gx.apdus(theirs["sent"], hdlc)
        answers = gx.apdus(theirs["received"], hdlc)
        self.assertEqual(len(requests), len(answers))
        aarq, aare = requests[0], answers[0]
        self.assertEqual((aarq[0], aare[0]), (0x60, 0x61))
        self.assertIn(CONTEXT[security], aarq)
        self.assertIn(CONTEXT[security], aare)
        self.assertIn(ACCEPTED, aare)
        if security in MECHANISM:
            self.assertIn(MECHANISM[security], aare)
        self.assertEqual((requests[-1][0], answers[-1][0]), (0x62, 0x63))  # RLRQ, RLRE
        middle = requests[1:-1] + answers[1:-1]
        tags = {apdu[0] for apdu in middle}
        if security == "high-gmac":
            self.assertIn(bytes.fromhex("a40a0408") + TITLE, aare)  # responding AP title
            self.assertLessEqual(tags, GLO_TAGS)  # nothing in clear after the AARE
            # Suite 0, authenticated and encrypted, both ways.
            self.assertEqual({security_control(apdu) for apdu in middle}, {0x30})
        else:
            self.assertLessEqual(tags, PLAIN_TAGS)
        if hdlc:
            ours = gx.hdlc_frames(theirs["received"])
            mine = gx.hdlc_frames(theirs["sent"])
            self.assertEqual((mine[0][0], mine[-1][0]), (SNRM, DISC))
            self.assertEqual((ours[0][0], ours[-1][0]), (UA, UA))

    async def check(self, hdlc: bool, security: str) -> None:
        factory = self.serve(hdlc, security)
        theirs = await deferToThread(gurux_session, self.port, hdlc, security)
        self.assertEqual(factory.errors, [])
        self.check_wire(theirs, hdlc, security)
        # The object list has the registers, the clock, the profiles and the association.
        names = {(class_id, ln) for class_id, _, ln in theirs["objects"]}
        for class_id, ln in [
            (3, "1.0.1.8.0.255"),
            (3, "1.0.32.7.0.255"),
            (8, "0.0.1.0.0.255"),
            (7, "1.0.99.1.0.255"),
            (7, "0.0.99.98.0.255"),
            (15, "0.0.40.0.0.255"),
            (70, "0.0.96.3.10.255"),
        ]:
            self.assertIn((class_id, ln), names)
        self.assertEqual(theirs["energy"], (sim.energy_wh(NOW), 1.0, 30))  # Wh, scaler 0
        # gurux applies the scaler (-1) to the raw 2301 itself, as a float.
        self.assertEqual((round(theirs["voltage"][0], 6), *theirs["voltage"][1:]), (230.1, 0.1, 35))
        self.assertEqual(theirs["clock"], NOW)
        self.assertEqual(theirs["period"], 900)
        self.assertEqual(theirs["columns"], LOAD_PROFILE_COLUMNS)
        self.assertEqual(
            theirs["rows"],
            [(t, 0, sim.energy_wh(t), sim.energy_wh(t, sim.EXPORT_W)) for t in PROFILE_TIMES],
        )

        # fep's own client, same meter, same link, same security: the same values.
        self.assertEqual(await self.fep_object_list(hdlc, security), theirs["objects"])
        from fep.protocols.dlms.context import DlmsContext
        from fep.store.counters import InvocationCounterFile

        counters = InvocationCounterFile(reactor, Path(self.mktemp()) / "counters.json")
        await counters.open()
        records = await DlmsProtocol(DlmsContext(counters)).read(
            reactor, self.endpoint(), self.fep_meter(hdlc, security), 5
        )
        readings = {str(r.obis): r for r in records if isinstance(r, Reading)}
        energy, voltage = readings["1-0:1.8.0*255"], readings["1-0:32.7.0*255"]
        assert energy.unit is not None and voltage.unit is not None
        self.assertEqual((energy.value, energy.unit.code), (Decimal(theirs["energy"][0]), 30))
        self.assertEqual(voltage.value, Decimal(str(round(theirs["voltage"][0], 6))))
        self.assertEqual(voltage.unit.code, 35)  # the scaler is applied to the value
        self.assertEqual(readings["0-0:1.0.0*255"].meter_time, theirs["clock"])
        blocks = {str(r.obis): r for r in records if isinstance(r, IntervalBlock)}
        for obis, column in [("1-0:1.8.0*255", 2), ("1-0:2.8.0*255", 3)]:
            block = blocks[obis]
            # fep keys an interval by its start; the DLMS entry is stamped at its end.
            ours = [(start + block.period, value) for start, value, _ in block.intervals()]
            self.assertEqual(ours, [(row[0], Decimal(row[column])) for row in theirs["rows"]])
        self.assertEqual(factory.errors, [])

    async def test_wrapper_no_security(self) -> None:
        await self.check(False, "none")

    async def test_wrapper_lls(self) -> None:
        await self.check(False, "low")

    async def test_wrapper_hls_gmac_suite_0(self) -> None:
        await self.check(False, "high-gmac")

    async def test_hdlc_no_security(self) -> None:
        await self.check(True, "none")

    async def test_hdlc_lls(self) -> None:
        await self.check(True, "low")

    async def test_hdlc_hls_gmac_suite_0(self) -> None:
        await self.check(True, "high-gmac")

    # -- refusals gurux understands ---------------------------------------------------------

    async def refused(
        self, hdlc: bool, security: str, **options: Any
    ) -> tuple[str, bytes, list[str]]:
        """gurux's error, the AARE it got and what the meter logged."""
        factory = self.serve(hdlc, security)
        error, aare = await deferToThread(gurux_refused, self.port, hdlc, options)
        self.assertEqual(aare[0], 0x61)
        self.assertNotIn(ACCEPTED, aare)
        return error, aare, factory.errors

    async def test_wrong_password_refused(self) -> None:
        for hdlc in (False, True):
            error, aare, logged = await self.refused(hdlc, "low", auth="low", password=b"87654321")
            self.assertIn("Authentication failure", error)
            self.assertIn(bytes.fromhex("a305a10302010d"), aare)  # authentication-failure
            self.assertEqual(len(logged), 1)

    async def test_management_client_needs_authentication(self) -> None:
        error, aare, _ = await self.refused(False, "low", client_address=1)
        self.assertIn("Authentication is required", error)
        self.assertIn(bytes.fromhex("a305a10302010e"), aare)  # authentication-required

    async def test_wrong_key_refused(self) -> None:
        for ek, ak in [(EXAMPLE_EK, bytes(16)), (bytes(16), EXAMPLE_AK)]:
            error, _, logged = await self.refused(
                False, "high-gmac", auth="high-gmac", ek=ek, ak=ak
            )
            self.assertIn("rejected", error)
            self.assertEqual(len(logged), 1)
            self.assertIn("verify", logged[0])  # the GCM tag of the AARQ's InitiateRequest


def dotted(obis: ObisCode) -> str:
    return f"{obis.a}.{obis.b}.{obis.c}.{obis.d}.{obis.e}.{obis.f}"
