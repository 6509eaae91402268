"""Acceptance (issue 17, pushes as field meters send them): published captures of Kaifa,
Aidon and Kamstrup HAN pushes (HDLC frames, tests/fixtures/dlms, each naming its source) sent
to the running daemon, on its DLMS push listener and over a GPRS session, are stored with
their OBIS codes, scalers, units and times; unciphered pushes of meters without keys are
taken by the ways `[push] dlms_plain` names, never from a meter with keys; truncated HDLC
segments and a list its layout does not fit are counted and logged with the device, and the
complete pushes around them are stored."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import axdr, hdlc
from fep.protocols.dlms.security import SecurityKeys
from tests.daemon import harness
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.daemon.test_dlms_push import AK, EK, PushingMeter, dlms_meter
from tests.postgres import fresh_database
from tests.protocols.dlms.fixtures import hex_fixture
from tests.protocols.dlms.test_push_austria import TINETZ_KEY, TINETZ_MBUS, TINETZ_TITLE
from tests.protocols.dlms.test_push_framing import (
    AIDON_LIST2,
    AIDON_SE,
    KAIFA_LIST1,
    KAIFA_LIST3,
    KAMSTRUP_LIST1,
    KAMSTRUP_SE,
    published_apdu,
    segments,
)
from tests.protocols.dlms.test_push_layouts import DK_CT_LAYOUT, KAMSTRUP_DK

KEYS = {"dlms_ek": "00" * 16, "dlms_ak": "11" * 16,
        "dlms_server_system_title": "4d4d4d0000bc614e"}
IMEI = "356938035643809"
WRAPPED = bytes.fromhex("4D4D4D0000000A01")


def meters() -> list[Meter]:
    plain = "tcp:host=127.0.0.1:port=1"
    return [
        # Norwegian local time without a deviation in the lists: the meters' zone.
        Meter("kaifa-1", "dlms", plain, serial="7340157011253544",
              metadata={"dlms_push_address": "hdlc:1/0", "dlms_deviation": "-120"}),
        Meter("aidon-1", "dlms", plain,
              metadata={"dlms_push_address": "hdlc:4/65", "dlms_deviation": "-60"}),
        Meter("kamstrup-1", "dlms", plain, serial="5706567274389702",
              metadata={"dlms_deviation": "-120"}),
        # A meter with keys: its unciphered pushes are never taken.
        Meter("kamstrup-keyed", "dlms", plain, serial="5706567326590407", metadata=KEYS),
    ]


def kfm001_of_the_wrong_length() -> bytes:
    """A KFM_001 list of 6 values (no Kaifa layout has 6) from the Kaifa's address."""
    body = axdr.structure(axdr.octet_string(b"KFM_001"), *[axdr.double_long_unsigned(7)] * 5)
    apdu = b"\x0f\x40\x00\x00\x00\x00" + axdr.encode(body)
    return hdlc.encode_frame(hdlc.HdlcFrame(
        hdlc.FrameKind.I, hdlc.HdlcAddress(0), hdlc.HdlcAddress(1, 0),
        information=hdlc.LLC_RESPONSE + apdu))


def first_segment_only(apdu: bytes) -> bytes:
    frames = hdlc.HdlcFrameDecoder().receive(segments(apdu, 200))
    return hdlc.encode_frame(frames[0])


async def connect(port: int) -> Protocol:
    return await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(Protocol))


def send(protocol: Protocol, data: bytes) -> None:
    assert protocol.transport is not None
    protocol.transport.write(data)


class PushFramingDaemonTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.db = self.workdir / "fep.sqlite"
        self.protocols: list[Protocol] = []
        self.addCleanup(self.close)

    def close(self) -> None:
        for p in self.protocols:
            if p.transport is not None:
                p.transport.loseConnection()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return harness.sqlite_rows(self.db, sql)

    def reading(self, meter: str, obis: str) -> tuple[Any, ...]:
        rows = harness.sqlite_rows(
            self.db, "SELECT value, unit_code, meter_time, source FROM readings "
            f"WHERE meter = '{meter}' AND obis = '{obis}' ORDER BY read_at DESC", strict=True)
        self.assertTrue(rows, f"no {obis} of {meter}")
        return rows[0]

    async def stored(self, meter: str, n: int) -> None:
        async def enough() -> bool:
            rows = self.rows(f"SELECT count(*) FROM readings WHERE meter = '{meter}'")
            return bool(rows) and rows[0][0] >= n

        await wait_for(enough, 30, f"{n} readings of {meter}", every=0.05)

    async def start(self, extra: str = "", dlms_push: bool = True,
                    more: tuple[Meter, ...] = ()) -> Daemon:
        await harness.add_meters(f"sqlite:{self.db}", [*meters(), *more])
        config = write_config(self.workdir, f"sqlite:{self.db}", push_port=0, collect=False,
                              dlms_push_port=0 if dlms_push else None, extra=extra)
        config.write_text(config.read_text().replace(
            "[push]\n", "[push]\ndlms_plain = address serial\n"))
        daemon = Daemon(config, self.workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        return daemon

    async def test_published_hdlc_pushes_on_the_push_listener(self) -> None:
        daemon = await self.start()
        port = await daemon.bound_port("DlmsPushFactory")
        await daemon.ready()

        kaifa, aidon, kamstrup, keyed, bad = [await connect(port) for _ in range(5)]
        self.protocols += [kaifa, aidon, kamstrup, keyed, bad]
        send(kaifa, hex_fixture(KAIFA_LIST3))  # bare KFM_001 values, by serial
        send(aidon, hex_fixture(AIDON_LIST2))  # structures, by HDLC address
        # The Swedish Aidon list, re-sent as three segments.
        send(aidon, segments(published_apdu(AIDON_SE), 200, source=hdlc.HdlcAddress(4, 65)))
        data = hex_fixture(KAMSTRUP_LIST1)
        for i in range(0, len(data), 7):  # pairs, by the meter ID in the list; in pieces
            send(kamstrup, data[i : i + 7])
        send(keyed, hex_fixture(KAMSTRUP_SE))  # a meter with keys, unciphered: refused
        # Bad input, then a complete push on the same connection.
        send(bad, first_segment_only(published_apdu(AIDON_SE)))
        send(bad, kfm001_of_the_wrong_length())
        send(bad, hex_fixture(KAIFA_LIST1))

        await self.stored("kaifa-1", 18)  # list 3 (17 values) and list 1 (1)
        await self.stored("kamstrup-1", 12)
        await daemon.logged("DLMS push rejected (plain)", 30)
        await daemon.logged("broken off after 200 bytes", 30)
        await daemon.logged("'KFM_001' of 6 values matches none of its layouts", 30)

        # Kaifa list 3 (2023-09-04 16:52 CEST): bare values through the KFM_001 layout.
        self.assertEqual(self.reading("kaifa-1", "1-0:1.7.0*255")[:3],
                         ("1103", 27, "2023-09-04T14:52:00.000000Z"))
        self.assertEqual(self.reading("kaifa-1", "1-0:31.7.0*255")[:2], ("2.191", 33))
        self.assertEqual(self.reading("kaifa-1", "1-0:32.7.0*255")[:2], ("226.6", 35))
        self.assertEqual(self.reading("kaifa-1", "1-0:1.8.0*255")[:2], ("146883017", 30))
        self.assertEqual(self.reading("kaifa-1", "1-0:4.8.0*255")[:2], ("20009365", 32))
        # Kaifa list 1, after the bad input on its connection.
        self.assertIn(("5502",), self.rows(
            "SELECT value FROM readings WHERE meter = 'kaifa-1' AND obis = '1-0:1.7.0*255'"))
        # Kamstrup list 1 (2017-10-20 03:43:30 CEST): the Kamstrup layout's scalers.
        self.assertEqual(self.reading("kamstrup-1", "1-1:31.7.0*255")[:3],
                         ("5.64", 33, "2017-10-20T01:43:30.000000Z"))
        self.assertEqual(self.reading("kamstrup-1", "1-1:1.7.0*255")[:2], ("1468", 27))
        # Aidon: its own scalers; the segmented Swedish list with its clock (CET).
        await self.stored("aidon-1", 9 + 26)
        self.assertEqual(self.reading("aidon-1", "1-0:31.7.0*255")[:2], ("9.3", 33))
        energy = self.reading("aidon-1", "1-0:1.8.0*255")
        self.assertEqual(energy[:3], ("10049926", 30, "2019-12-16T06:59:40.000000Z"))
        # Nothing from the meter with keys; the refusals logged with the device.
        self.assertEqual(self.rows(
            "SELECT count(*) FROM readings WHERE meter = 'kamstrup-keyed'"), [(0,)])
        log = daemon.log_text()
        broken = [line for line in log.splitlines() if "broken off after 200" in line]
        self.assertIn("(device 127.0.0.1:", broken[0])
        self.assertIn("hdlc:32)", broken[0])  # the sender of the first segment
        self.assertEqual(await daemon.interrupt(), 0, log[-3000:])

    async def test_published_hdlc_pushes_over_a_gprs_session(self) -> None:
        gprs_port = free_port()
        # The Kaifa meter behind a GPRS modem: the session names it, no keys needed.
        daemon = await self.start(
            extra=f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                  "unknown = reject\nidle_timeout = 300\n", dlms_push=False,
            more=(Meter("kaifa-gprs", "dlms", f"gprs:imei={IMEI}",
                        metadata={"dlms_deviation": "-120"}),))
        await daemon.ready()
        modem = await connect(gprs_port)
        self.protocols.append(modem)
        send(modem, f"ID:{IMEI}\r\n".encode())
        await daemon.logged(f"imei={IMEI}", 30)
        data = hex_fixture(KAIFA_LIST3)
        send(modem, data[:50])
        send(modem, data[50:])
        send(modem, first_segment_only(published_apdu(AIDON_SE)))  # truncated segments
        send(modem, hex_fixture(KAIFA_LIST1))

        await self.stored("kaifa-gprs", 18)
        await daemon.logged("broken off after 200 bytes", 30)
        value, unit, meter_time, source = self.reading("kaifa-gprs", "1-0:31.7.0*255")
        self.assertEqual((value, unit, meter_time), ("2.191", 33, "2023-09-04T14:52:00.000000Z"))
        self.assertEqual(source, f"gprs:imei={IMEI}")
        log = daemon.log_text()
        broken = [line for line in log.splitlines() if "broken off after 200" in line]
        self.assertIn("(device meter kaifa-gprs", broken[0])
        # Segments left open when the modem hangs up are counted too.
        send(modem, first_segment_only(published_apdu(AIDON_SE)))
        assert modem.transport is not None
        modem.transport.loseConnection()
        await daemon.logged("broken off after 200 bytes: the connection ended", 30)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

    async def test_a_han_modem_without_registration_is_identified_by_its_hdlc_push(
        self,
    ) -> None:
        gprs_port = free_port()
        # The Kaifa meter's route names the serial its lists carry (gprs:serial=...).
        daemon = await self.start(
            extra=f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                  "identify = ascii dlms-hdlc\nunknown = reject\nidle_timeout = 300\n",
            dlms_push=False,
            more=(Meter("kaifa-han", "dlms", "gprs:serial=7340157011253544",
                        metadata={"dlms_deviation": "-120"}),))
        await daemon.ready()
        modem = await connect(gprs_port)
        self.protocols.append(modem)
        send(modem, hex_fixture(KAIFA_LIST3))  # identifies the session, and is its 1st push
        send(modem, hex_fixture(KAIFA_LIST1))
        await self.stored("kaifa-han", 18)
        self.assertEqual(self.reading("kaifa-han", "1-0:32.7.0*255")[:3],
                         ("226.6", 35, "2023-09-04T14:52:00.000000Z"))
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

    async def test_an_austrian_mbus_push_ciphered_with_the_customer_key(self) -> None:
        # The published TINETZ Kaifa MA309 push: M-Bus frames, encryption only (suite 1),
        # the one customer key; after a segment sequence cut short on the same connection.
        ma309 = Meter("ma309", "dlms", "tcp:host=127.0.0.1:port=1", metadata={
            "dlms_server_system_title": TINETZ_TITLE, "dlms_ek": TINETZ_KEY,
            "dlms_push_security": "encryption-only"})
        daemon = await self.start(more=(ma309,))
        port = await daemon.bound_port("DlmsPushFactory")
        await daemon.ready()
        meter = await connect(port)
        self.protocols.append(meter)
        data = hex_fixture(TINETZ_MBUS)
        send(meter, data[: 0xFA + 6])  # the first segment alone, then the whole push
        for i in range(0, len(data), 11):
            send(meter, data[i : i + 11])
        await self.stored("ma309", 9)
        await daemon.logged("M-Bus segments of an APDU broken off after 245 bytes", 30)
        self.assertEqual(self.reading("ma309", "1-0:1.8.0*255")[:3],
                         ("9108", 30, "2021-07-19T13:46:35.000000Z"))
        self.assertEqual(self.reading("ma309", "1-0:32.7.0*255")[:2], ("230.8", 35))
        self.assertEqual(self.reading("ma309", "1-0:4.8.0*255")[:2], ("9", 32))
        # The same push again is a replay of its invocation counter: stored once.
        send(meter, data)
        await daemon.logged("DLMS push rejected (replay)", 30)
        log = daemon.log_text()
        broken = [line for line in log.splitlines() if "M-Bus segments of an APDU" in line]
        self.assertIn("(device 127.0.0.1:", broken[0])
        self.assertIn("mbus:255)", broken[0])
        self.assertNotIn(TINETZ_KEY, log)
        self.assertEqual(await daemon.interrupt(), 0, log[-3000:])
        self.assertEqual(self.rows("SELECT count(*) FROM readings WHERE meter = 'ma309'"),
                         [(9,)])

    async def test_an_austrian_mbus_push_over_a_gprs_session(self) -> None:
        gprs_port = free_port()
        daemon = await self.start(
            extra=f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                  "unknown = reject\nidle_timeout = 300\n", dlms_push=False,
            more=(Meter("ma309-gprs", "dlms", f"gprs:imei={IMEI}", metadata={
                "dlms_server_system_title": TINETZ_TITLE, "dlms_ek": TINETZ_KEY,
                "dlms_push_security": "encryption-only"}),))
        await daemon.ready()
        modem = await connect(gprs_port)
        self.protocols.append(modem)
        send(modem, f"ID:{IMEI}\r\n".encode())
        await daemon.logged(f"imei={IMEI}", 30)
        data = hex_fixture(TINETZ_MBUS)
        send(modem, data[:100])
        send(modem, data[100:])
        await self.stored("ma309-gprs", 9)
        value, unit, meter_time, source = self.reading("ma309-gprs", "1-0:1.8.0*255")
        self.assertEqual((value, unit, meter_time), ("9108", 30, "2021-07-19T13:46:35.000000Z"))
        self.assertEqual(source, f"gprs:imei={IMEI}")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

    async def test_a_danish_list_with_the_meter_s_own_layout(self) -> None:
        # The published Danish Kamstrup list (Kamstrup_V0001 like the Norwegian, scalers of
        # the meter's configuration): read with the layout its meter names, from the
        # user's layout directory ([dlms] push_layouts).
        layouts = self.workdir / "layouts"
        layouts.mkdir()
        (layouts / "dk.ini").write_text(DK_CT_LAYOUT)
        dk = Meter("kamstrup-dk", "dlms", "tcp:host=127.0.0.1:port=1", metadata={
            "dlms_push_address": "hdlc:16", "dlms_deviation": "-60",
            "dlms_push_layout": "dk-ct"})
        daemon = await self.start(extra=f"[dlms]\npush_layouts = {layouts}\n", more=(dk,))
        port = await daemon.bound_port("DlmsPushFactory")
        await daemon.ready()
        meter = await connect(port)
        self.protocols.append(meter)
        send(meter, hex_fixture(KAMSTRUP_DK))
        await self.stored("kamstrup-dk", 31)
        self.assertEqual(self.reading("kamstrup-dk", "1-1:1.8.0*255")[:3],
                         ("12767600", 30, "2022-02-01T08:17:20.000000Z"))
        self.assertEqual(self.reading("kamstrup-dk", "1-1:31.7.0*255")[:2], ("90.999", 33))
        self.assertEqual(self.reading("kamstrup-dk", "1-1:33.7.0*255")[:2], ("0.02", None))
        self.assertEqual(self.reading("kamstrup-dk", "1-1:62.7.0*255")[:2], ("1004", 27))
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])


class PushFramingPostgresTests(unittest.TestCase):
    """The push listener's framings with the PostgreSQL store: HDLC (plain, published
    captures; segmented), the wrapper (ciphered, simulated meter) and M-Bus (ciphered,
    the published Austrian capture) on one daemon; every accepted push is stored once
    (exact row counts), a replayed ciphered push and a keyed meter's plain push not at all,
    truncated segments and a list no layout fits are counted and the pushes around them
    kept."""

    timeout = 120

    async def test_every_framing_stored_once_in_postgresql(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        url = fresh_database(self)
        ma309 = Meter("ma309", "dlms", "tcp:host=127.0.0.1:port=1", metadata={
            "dlms_server_system_title": TINETZ_TITLE, "dlms_ek": TINETZ_KEY,
            "dlms_push_security": "encryption-only"})
        # The simulated meter's own title (the keyed Kamstrup has the simulator's default).
        await harness.add_meters(url, [*meters(), ma309, dlms_meter("dlms-1", WRAPPED)])
        config = write_config(workdir, url, push_port=0, collect=False, dlms_push_port=0)
        config.write_text(config.read_text().replace(
            "[push]\n", "[push]\ndlms_plain = address serial\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        port = await daemon.bound_port("DlmsPushFactory")
        await daemon.ready()
        conn = psycopg2.connect(url)
        conn.autocommit = True
        self.addCleanup(conn.close)

        def rows(sql: str) -> list[tuple[Any, ...]]:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())

        def count(meter: str) -> int:
            return int(rows(f"SELECT count(*) FROM readings WHERE meter = '{meter}'")[0][0])

        protocols: list[Protocol] = []
        self.addCleanup(lambda: [p.transport.loseConnection() for p in protocols
                                 if p.transport is not None])
        kaifa, aidon, kamstrup, keyed, austrian, bad = [await connect(port) for _ in range(6)]
        protocols += [kaifa, aidon, kamstrup, keyed, austrian, bad]
        send(kaifa, hex_fixture(KAIFA_LIST3))
        send(aidon, hex_fixture(AIDON_LIST2))
        send(aidon, segments(published_apdu(AIDON_SE), 200, source=hdlc.HdlcAddress(4, 65)))
        data = hex_fixture(KAMSTRUP_LIST1)
        for i in range(0, len(data), 7):
            send(kamstrup, data[i : i + 7])
        send(keyed, hex_fixture(KAMSTRUP_SE))
        send(austrian, hex_fixture(TINETZ_MBUS))
        send(bad, first_segment_only(published_apdu(AIDON_SE)))
        send(bad, kfm001_of_the_wrong_length())
        send(bad, hex_fixture(KAIFA_LIST1))
        wrapped = PushingMeter(WRAPPED, SecurityKeys(EK, AK), "WRAPPED1")
        await wrapped.connect(port)
        self.addCleanup(wrapped.close)
        first = wrapped.push()

        wanted = {"kaifa-1": 18, "aidon-1": 35, "kamstrup-1": 12, "ma309": 9, "dlms-1": 5}

        async def all_stored() -> bool:
            return all(count(m) >= n for m, n in wanted.items())

        await wait_for(all_stored, 60, "every accepted push in PostgreSQL", every=0.1)
        # Replays of the ciphered pushes (wrapper and M-Bus): refused, nothing stored.
        wrapped.send(first)
        send(austrian, hex_fixture(TINETZ_MBUS))
        await daemon.logged("DLMS push rejected (replay) from system title "
                            f"{WRAPPED.hex()}", 30)
        await daemon.logged(f"DLMS push rejected (replay) from system title {TINETZ_TITLE}",
                            30)
        await daemon.logged("DLMS push rejected (plain)", 30)
        await daemon.logged("broken off after 200 bytes", 30)
        await daemon.logged("'KFM_001' of 6 values matches none of its layouts", 30)
        log = daemon.log_text()
        self.assertEqual(await daemon.interrupt(), 0, log[-3000:])
        # Once each: list 3 (17) and list 1 (1); Aidon lists 2 (9) and the Swedish (26);
        # Kamstrup list 1 (12); the Austrian list (9); the simulated meter's push (5).
        self.assertEqual(
            rows("SELECT meter, count(*) FROM readings GROUP BY meter ORDER BY meter"),
            [("aidon-1", 35), ("dlms-1", 5), ("kaifa-1", 18), ("kamstrup-1", 12),
             ("ma309", 9)])
        self.assertEqual(rows(
            "SELECT count(*) FROM (SELECT meter, obis, meter_time FROM readings "
            "GROUP BY meter, obis, meter_time "
            "HAVING count(*) > 1) doubled"), [(0,)])
        when = datetime(2023, 9, 4, 14, 52, tzinfo=UTC)
        self.assertEqual(rows(
            "SELECT value, unit_code, meter_time FROM readings WHERE meter = 'kaifa-1' "
            "AND obis = '1-0:31.7.0*255'"), [(Decimal("2.191"), 33, when)])
        self.assertEqual(rows(
            "SELECT value, unit_code, meter_time FROM readings WHERE meter = 'ma309' "
            "AND obis = '1-0:1.8.0*255'"),
            [(Decimal(9108), 30, datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC))])
        self.assertEqual(rows(
            "SELECT value, unit_code FROM readings WHERE meter = 'kamstrup-1' "
            "AND obis = '1-1:31.7.0*255'"), [(Decimal("5.64"), 33)])
        self.assertEqual(rows(
            "SELECT count(*) FROM readings WHERE meter = 'dlms-1' AND unit_code = 35"),
            [(1,)])
