"""Acceptance: a real browser (Debian's headless Chromium) loads the status page from the
running daemon fed by a simulated fleet; the charts are drawn with data (checked in the DOM
after the page's scripts ran) and a screenshot is saved in the test's temp dir."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from fep.model import Meter
from fep.operator.http import status_url
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.sim import dlms_meter
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from tests.daemon.harness import Daemon, add_meters, free_port, wait_for, write_config
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    VIEWER_TOKEN,
    http,
    write_tokens,
)
from tests.system import require_program

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--disable-dev-shm-usage", "--no-first-run", "--window-size=1280,1700"]


def chromium() -> str:
    return require_program("chromium", "chromium-browser", package="chromium")


async def run_chromium(*args: str) -> tuple[bytes, bytes, int]:
    out, err, code = await getProcessOutputAndValue(
        chromium(), [*CHROMIUM_FLAGS, *args], env={"HOME": "/tmp"}, reactor=reactor)
    return out, err, code


class StatusPageInChromiumTests(unittest.TestCase):
    timeout = 180

    async def plan(self, base: str, spec: dict[str, object]) -> int:
        """Run a control plan to its end through the API (alice makes it, bob approves)."""
        async def post(path: str, token: str, body: object) -> dict[str, object]:
            r = await http(f"{base}/api/v1/{path}", method=b"POST", token=token,
                           body=json.dumps(body).encode())
            self.assertEqual(r.status, 200, r.body)
            answer: dict[str, object] = r.json()
            return answer

        made = await post("plans", OPERATOR_TOKEN, spec)
        pid = int(str(made["id"]))
        await post(f"plans/{pid}/submit", OPERATOR_TOKEN, {})
        await post(f"plans/{pid}/approve", SECOND_OPERATOR_TOKEN, {})
        await post(f"plans/{pid}/start", OPERATOR_TOKEN, {})

        async def done() -> bool:
            r = await http(f"{base}/api/v1/plans/{pid}", token=VIEWER_TOKEN)
            return bool(r.json()["status"] == "done")

        await wait_for(done, 60, f"plan {pid} to end")
        return pid

    def listen(self, factory: object) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def test_charts_are_drawn_with_data_from_the_running_daemon(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        write_tokens(workdir / "tokens")
        iec_port = self.listen(IecMeterServerFactory(make_meters(2), reactor))
        dlms_port = self.listen(DlmsMeterServerFactory(
            dlms_meter.SimulatedDlmsMeter(history=timedelta(hours=12)),
            ServerSettings(keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK), allow_lowest=False)))
        since = (datetime.now(UTC) - timedelta(hours=6)).isoformat()
        meters = [
            Meter("dlms-1", "dlms", f"tcp:host=127.0.0.1:port={dlms_port}", metadata={
                "dlms_auth": "high-gmac", "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(), "dlms_profile": "1.0.99.1.0.255",
                "dlms_from": since}),
            *[Meter(f"iec-{n}", "iec62056-21", f"tcp:host=127.0.0.1:port={iec_port}",
                    address=f"{10000000 + n}") for n in (1, 2)],
            # Nobody listens there: a failing meter on its own channel.
            Meter("lost-1", "iec62056-21", f"tcp:host=127.0.0.1:port={free_port()}"),
        ]
        await add_meters(f"sqlite:{db}", meters)
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=2.0,
            extra=f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        base = f"http://127.0.0.1:{http_port}"

        async def fleet_read() -> bool:
            try:
                r = await http(f"{base}/api/v1/stats", token=VIEWER_TOKEN)
            except Exception:
                return False
            stats = r.json()
            return bool(stats["meters_ok"] >= 3 and stats["meters_failing"] >= 1
                        and stats["router"]["spool_depth"] == 0)

        await wait_for(fleet_read, 60, "the fleet to be read through the daemon")
        # A control plan, run to its end: a demand reset of the fleet (the IEC meters' protocol
        # has none).
        plan = await self.plan(base, {"name": "monthly", "action": "demand-reset",
                                      "target": "all", "rate": 600})

        page = await http(f"{base}/status")
        self.assertIn(b"script-src 'self'",
                      page.headers.getRawHeaders(b"content-security-policy")[0])
        url = status_url(base, VIEWER_TOKEN)
        dom, err, code = await run_chromium("--virtual-time-budget=15000", "--dump-dom",
                                            "--enable-logging=stderr", "--v=0", url)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        html = dom.decode()
        # The page runs under its Content-Security-Policy (own scripts and styles only)
        # and nothing of it is refused.
        violations = [line for line in err.decode(errors="replace").splitlines()
                      if "Content Security Policy" in line]
        self.assertEqual(violations, [])
        self.assertIn('data-loaded="yes"', html, html[-3000:])

        def chart(element_id: str) -> str:
            found = re.search(rf'<div id="{element_id}"[^>]*>(.*?)</div>', html, re.S)
            assert found is not None, f"no #{element_id} in the page"
            return found.group(1)

        success = chart("success-chart")
        points = re.search(r'<svg class="fep-chart"[^>]*data-points="(\d+)"', success)
        assert points is not None, success[:500]
        self.assertGreaterEqual(int(points.group(1)), 1)
        self.assertRegex(success, "<polyline|<circle")
        profile = chart("profile-chart")
        points = re.search(r'<svg class="fep-chart"[^>]*data-points="(\d+)"', profile)
        assert points is not None, profile[:500]
        # Six hours of 15-minute intervals, import and export: dozens of points per series.
        self.assertGreaterEqual(int(points.group(1)), 20)
        self.assertIn("<polyline", profile)
        self.assertIn('data-name="1-0:1.8.0*255 (Wh)"', profile)
        # The fleet cards and tables are filled from the API too.
        self.assertIn('<b id="meters">4</b>', html)
        self.assertIn('<b id="meters-failing">1</b>', html)
        self.assertIn(f"<td>tcp:127.0.0.1:{iec_port}</td>", html)
        # The plan's progress bar and outcome counts.
        row = re.search(rf'<tr><td>{plan} monthly</td>(.*?)</tr>', html, re.S)
        assert row is not None, html[-3000:]
        self.assertIn("<td>demand-reset</td><td>done</td>", row.group(0))
        self.assertRegex(row.group(1), rf'<progress max="4" value="4" data-plan="{plan}">'
                         r'</progress> 4/4</td><td>1</td><td>0</td><td>3</td><td>0</td>'
                         r'<td>0</td><td>api:alice</td><td>api:bob</td>')

        screenshot = workdir / "status.png"
        _, err, code = await run_chromium("--virtual-time-budget=15000",
                                          f"--screenshot={screenshot}", url)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        self.assertTrue(screenshot.exists())
        self.assertGreater(screenshot.stat().st_size, 10_000)
        self.assertEqual(await daemon.interrupt(), 0)
