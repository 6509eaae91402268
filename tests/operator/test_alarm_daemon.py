"""Acceptance: a simulated DLMS meter pushes a last gasp (twice, a second apart) to the
running daemon on PostgreSQL; the alarm reaches a local SMTP sink started by the test once,
a LISTEN on fep_alarm receives it once, the GSM modem emulator (on a socat pty, the daemon's
[sms] port) sends it once as a text message to the rule's number, and the second push is
counted on the open alarm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest
from txpostgres import txpostgres

from fep.model import Meter
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.sim.gsm_modem import GsmModemEmulator, GsmNetwork, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon.harness import Daemon, add_meters, wait_for, write_config
from tests.daemon.test_dlms_push import AK, EK, GOOD, PushingMeter
from tests.operator.smtpsink import SmtpSink
from tests.postgres import fresh_database

TABLE = """
[notify:control-room]
severity = critical
group = north
email = ops@example.com
sms = +491701234567
"""


class AlarmFromAPushTests(unittest.TestCase):
    timeout = 120

    async def test_last_gasp_push_is_mailed_once_and_notified_to_listeners(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        url = fresh_database(self)
        sink = await SmtpSink.start(self)
        await add_meters(url, [Meter("dlms-1", "dlms", "tcp:host=127.0.0.1:port=1", metadata={
            "dlms_server_system_title": GOOD.hex(), "dlms_ek": EK.hex(), "dlms_ak": AK.hex(),
            "group": "north"})])
        listener = txpostgres.Connection()
        await listener.connect(url)
        self.addCleanup(listener.close)
        heard: list[Any] = []
        listener.addNotifyObserver(heard.append)
        await listener.runOperation("LISTEN fep_alarm")

        # The daemon's SMS channel: a GSM modem emulator on a socat pty pair.
        a, b = await socat_pty_pair(self)
        network = GsmNetwork(reactor)
        modem = GsmModemEmulator("+491700000001", capacity=10)
        network.attach(modem)
        serial = serve_pty(reactor, a, modem)
        self.addCleanup(serial.loseConnection)

        (workdir / "alarms.ini").write_text(TABLE)
        config = write_config(
            workdir, url, push_port=0, collect=False, dlms_push_port=0,
            extra=(f"[alarms]\ntable = {workdir / 'alarms.ini'}\ndebounce = 600\n"
                   f"smtp_port = {sink.port}\nmail_from = fep@test\n"
                   f"[sms]\nport = serial:{b}:115200:8N1\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        port = await daemon.bound_port("DlmsPushFactory")

        meter = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        clock = [0.0]
        from datetime import UTC, datetime, timedelta

        start = datetime.now(UTC).replace(microsecond=0)
        meter.meter.now = lambda: start + timedelta(seconds=clock[0])

        async def connected() -> bool:
            try:
                await meter.connect(port)
            except Exception:
                return False
            return True

        await wait_for(connected, 30, "the daemon's DLMS push listener")
        self.addCleanup(meter.close)

        def last_gasp() -> None:
            body = meter.meter.alarm_push_body(1)  # standard event 1: power down
            meter.send(wrapper.encode_wrapper(wrapper.WrapperFrame(1, 1, meter.server.push(body))))

        def sql(query: str) -> list[tuple[Any, ...]]:
            conn = psycopg2.connect(url)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(query)
                    return list(cursor.fetchall())
            finally:
                conn.close()

        last_gasp()

        async def mailed() -> bool:
            return len(sink.messages) >= 1 and len(heard) >= 1 and len(network.messages) >= 1

        await wait_for(mailed, 30, "the alarm e-mail, text message and NOTIFY")
        clock[0] = 1.0
        last_gasp()  # the same outage reported again a second later

        async def counted() -> bool:
            return sql("SELECT count FROM alarms") == [(2,)]

        await wait_for(counted, 30, "the second push counted on the open alarm")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

        self.assertEqual(sql("SELECT count(*) FROM events WHERE meter = 'dlms-1'"), [(2,)])
        self.assertEqual(len(sink.messages), 1)
        _, recipients, message = sink.messages[0]
        self.assertEqual(recipients, ["ops@example.com"])
        self.assertEqual(message["Subject"], "[fep critical] power-outage at meter dlms-1")
        await listener.runOperation("SELECT 1")
        self.assertEqual(len(heard), 1)
        payload = json.loads(heard[0].payload)
        self.assertEqual((payload["meter"], payload["kind"], payload["code"]),
                         ("dlms-1", "power-outage", "dlms:99.98.0:1"))
        self.assertEqual(
            sorted(sql("SELECT channel, target, outcome FROM alarm_notifications")),
            [("email", "ops@example.com", "sent"), ("sms", "+491701234567", "sent")])
        [text] = network.messages
        self.assertEqual(text.destination, "+491701234567")
        self.assertIn("power-outage meter dlms-1", text.text)
