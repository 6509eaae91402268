"""The operator web server over real HTTP: token checks on every API endpoint and on the
metrics, each endpoint's answer from a real SQLite store, paging and filters, commands with
their approval rules, the status page's files."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.operator.http import site
from fep.operator.metrics import FepMetrics, TimedStore
from fep.operator.tokens import TokenFile
from fep.operator.webguard import AuthFailures
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    TOKENS,
    VIEWER_TOKEN,
    FakeScheduler,
    http,
    make_context,
    sample_records,
)

# Every API endpoint with the method it answers; "m1" is a stored meter.
ENDPOINTS = [
    (b"GET", "meters"),
    (b"GET", "meters/m1"),
    (b"GET", "meters/m1/readings"),
    (b"GET", "meters/m1/profile"),
    (b"GET", "meters/m1/events"),
    (b"POST", "meters/m1/read"),
    (b"POST", "meters/m1/archive-sync"),
    (b"GET", "sessions"),
    (b"GET", "channels"),
    (b"GET", "tasks"),
    (b"POST", "tasks/daily-profile/run"),
    (b"GET", "jobs"),
    (b"GET", "commands"),
    (b"POST", "meters/m1/commands"),
    (b"POST", "commands/1/approve"),
    (b"POST", "commands/1/reject"),
    (b"GET", "plans"),
    (b"POST", "plans"),
    (b"GET", "plans/1"),
    (b"POST", "plans/1/approve"),
    (b"GET", "stats"),
    (b"GET", "success-rate"),
    (b"GET", "alarms"),
    (b"GET", "export/cim?meter=m1"),
]


class ApiTests(unittest.TestCase):
    timeout = 30

    async def serve(self, *, scheduler: bool = True, meters: list[Meter] | None = None) -> str:
        sims = make_meters(1)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        route = f"tcp:host=127.0.0.1:port={sim_port.getHost().port}"
        self.ctx = await make_context(self, meters or [
            Meter("m1", "iec62056-21", route, address=sims[0].address,
                  metadata={"group": "north", "c12_password": "hidden"}),
            Meter("m2", "iec62056-21", "tcp:host=127.0.0.1:port=1", metadata={"group": "south"}),
        ])
        self.metrics = FepMetrics.create()
        self.ctx.store = TimedStore(self.ctx.store, self.metrics.store_latency)
        self.metrics.attach(self.ctx)
        await self.ctx.store.write(sample_records("m1"))
        if scheduler:
            self.scheduler = FakeScheduler()
            self.ctx.scheduler = self.scheduler
        # These tests send many refused requests on purpose: failed logins are limited
        # per source in tests.operator.test_webguard.
        port = reactor.listenTCP(0, site(self.ctx, TokenFile.parse(TOKENS), self.metrics,
                                         failures=AuthFailures(reactor.seconds, limit=0)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        return self.base

    async def get(self, path: str, token: str = VIEWER_TOKEN, **kw: Any) -> Any:
        r = await http(f"{self.base}/api/v1/{path}", token=token, **kw)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.headers.getRawHeaders(b"content-type")[0][:16], b"application/json")
        return r.json()

    # -- authentication ---------------------------------------------------------------------

    async def test_every_endpoint_refuses_a_request_without_a_token(self) -> None:
        await self.serve()
        for method, path in ENDPOINTS:
            r = await http(f"{self.base}/api/v1/{path}", method=method)
            self.assertEqual(r.status, 401, path)
            self.assertEqual(r.headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="fep"'])
            self.assertIn("token", r.json()["error"])

    async def test_every_endpoint_refuses_an_unknown_token_and_another_scheme(self) -> None:
        await self.serve()
        for method, path in ENDPOINTS:
            r = await http(f"{self.base}/api/v1/{path}", method=method,
                           token="not-a-token-of-this-daemon")
            self.assertEqual(r.status, 401, path)
        from twisted.web.client import Agent, readBody
        from twisted.web.http_headers import Headers

        basic = Headers({b"authorization": [b"Basic " + VIEWER_TOKEN.encode()]})
        response = await Agent(reactor).request(b"GET", f"{self.base}/api/v1/meters".encode(),
                                                basic)
        await readBody(response)
        self.assertEqual(response.code, 401)

    async def test_metrics_need_a_token_and_show_the_daemon_counters(self) -> None:
        await self.serve()
        self.assertEqual((await http(f"{self.base}/metrics")).status, 401)
        await self.get("meters/m1/readings")  # one timed store query at least
        r = await http(f"{self.base}/metrics", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        for name in ("fep_store_latency_seconds_bucket", 'operation="readings"',
                     "fep_spool_depth", "fep_meters 2.0", 'fep_jobs_total{outcome="ok"} 3.0',
                     "fep_records_total", "fep_sessions", "fep_meter_reads_total",
                     "fep_push_frames_total", "fep_protocol_errors_total"):
            self.assertIn(name, text)

    # -- data --------------------------------------------------------------------------------

    async def test_meters_list_hides_secrets_and_filters_by_group(self) -> None:
        await self.serve()
        body = await self.get("meters")
        self.assertEqual([m["id"] for m in body["meters"]], ["m1", "m2"])
        m1 = body["meters"][0]
        self.assertEqual(m1["group"], "north")
        self.assertNotIn("c12_password", m1["metadata"])
        self.assertNotIn("hidden", str(body))
        south = await self.get("meters?group=south")
        self.assertEqual([m["id"] for m in south["meters"]], ["m2"])

    async def test_one_meter_and_an_unknown_one(self) -> None:
        await self.serve()
        self.assertEqual((await self.get("meters/m1"))["protocol"], "iec62056-21")
        r = await http(f"{self.base}/api/v1/meters/nope", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 404)
        self.assertIn("nope", r.json()["error"])
        r = await http(f"{self.base}/api/v1/meters/nope/readings", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 404)

    async def test_readings_are_paged_in_time_order_with_exact_values(self) -> None:
        await self.serve()
        first = await self.get("meters/m1/readings?limit=2")
        self.assertEqual([r["value"] for r in first["readings"]], ["1000.5", "1001.5"])
        self.assertEqual(first["readings"][0]["unit"], "kWh")
        self.assertEqual(first["next_offset"], 2)
        last = await self.get("meters/m1/readings?limit=2&offset=4")
        self.assertEqual([r["value"] for r in last["readings"]], ["1004.5"])
        self.assertIsNone(last["next_offset"])

    async def test_readings_by_time_range_and_obis(self) -> None:
        await self.serve()
        ranged = await self.get(
            "meters/m1/readings?from=2026-03-01T01:00:00Z&to=2026-03-01T03:00:00Z")
        self.assertEqual([r["time"] for r in ranged["readings"]],
                         ["2026-03-01T01:00:00+00:00", "2026-03-01T02:00:00+00:00"])
        self.assertEqual(len((await self.get("meters/m1/readings?obis=1.8.0"))["readings"]), 5)
        self.assertEqual((await self.get("meters/m1/readings?obis=2.8.0"))["readings"], [])
        for bad in ("from=yesterday", "limit=0", "limit=x", "obis=9.9.9.9.9.9.9"):
            r = await http(f"{self.base}/api/v1/meters/m1/readings?{bad}", token=VIEWER_TOKEN)
            self.assertEqual(r.status, 400, bad)
            self.assertTrue(r.json()["error"])

    async def test_load_profile_by_time_range(self) -> None:
        await self.serve()
        whole = await self.get("meters/m1/profile")
        self.assertEqual(len(whole["blocks"]), 1)
        block = whole["blocks"][0]
        self.assertEqual((block["obis"], block["unit"], block["period_s"]),
                         ("1-0:1.7.0*255", "W", 900))
        self.assertEqual(len(block["points"]), 96)
        self.assertEqual(block["points"][1], ["2026-03-01T00:15:00+00:00", "110", 0])
        hour = await self.get("meters/m1/profile?from=2026-03-01T06:00:00Z"
                              "&to=2026-03-01T07:00:00Z")
        self.assertEqual(len(hour["blocks"][0]["points"]), 4)

    async def test_events_by_time_range(self) -> None:
        await self.serve()
        events = (await self.get("meters/m1/events"))["events"]
        self.assertEqual([e["kind"] for e in events], ["power-outage", "power-restored"])
        later = await self.get("meters/m1/events?from=2026-03-01T02:30:00Z")
        self.assertEqual([e["code"] for e in later["events"]], ["dlms:99.98.0:2"])

    async def test_stats_sessions_channels_and_success_rate(self) -> None:
        await self.serve()
        stats = await self.get("stats")
        self.assertEqual((stats["node"], stats["meters"], stats["meters_never_read"]),
                         ("test-node", 2, 2))
        self.assertEqual(stats["jobs"], {"ok": 3, "failed": 1})
        self.assertIn("spool_depth", stats["router"])
        self.assertEqual((await self.get("sessions"))["sessions"], [])
        await self.get("meters/m1/read", token=OPERATOR_TOKEN, method=b"POST")
        channels = (await self.get("channels"))["channels"]
        self.assertEqual(len(channels), 1)
        self.assertEqual((channels[0]["reads_ok"], channels[0]["meters"]), (1, 1))
        self.assertTrue(channels[0]["channel"].startswith("tcp:127.0.0.1:"))
        rate = await self.get("success-rate?minutes=5")
        self.assertEqual(rate["buckets"][-1]["ok"], 1)
        self.assertEqual(rate["buckets"][-1]["rate"], 1.0)

    async def test_alarms_say_when_no_alarm_engine_runs(self) -> None:
        await self.serve()
        self.assertEqual(await self.get("alarms"), {"alarms": [], "enabled": False})

    # -- commands ------------------------------------------------------------------------------

    async def test_read_needs_the_operator_role_and_stores_what_it_read(self) -> None:
        await self.serve()
        r = await http(f"{self.base}/api/v1/meters/m1/read", method=b"POST", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 403)
        self.assertIn("operator role", r.json()["error"])
        body = await self.get("meters/m1/read", token=OPERATOR_TOKEN, method=b"POST")
        values = {r["obis"]: r["value"] for r in body["readings"]}
        self.assertEqual(Decimal(values["1-0:1.8.0*255"]), Decimal("1000.5"))
        self.assertTrue(await self.ctx.router.flush(5))
        stored = await self.ctx.store.readings("m1", obis="1-0:1.8.0*255")
        self.assertIn(Decimal("1000.5"), [r.value for r in stored])

    async def test_a_client_that_leaves_during_a_read_still_gets_it_stored(self) -> None:
        await self.serve()
        slow = make_meters(1, first_address=20000001)
        factory = IecMeterServerFactory(slow, reactor, answer_delay=0.3)
        reached: list[object] = []  # connections to the slow meter: the read is under way
        build = factory.buildProtocol

        def building(addr: Any) -> Any:
            reached.append(addr)
            return build(addr)

        factory.buildProtocol = building  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        await self.ctx.store.add_meters([Meter(
            "slow", "iec62056-21", f"tcp:host=127.0.0.1:port={port.getHost().port}",
            address=slow[0].address)])
        from twisted.web.client import Agent, ResponseNeverReceived
        from twisted.web.http_headers import Headers

        asked = Agent(reactor).request(
            b"POST", f"{self.base}/api/v1/meters/slow/read".encode(),
            Headers({b"authorization": [b"Bearer " + OPERATOR_TOKEN.encode()]}))
        from tests.daemon.harness import wait_for

        async def reading() -> bool:
            return bool(reached)

        await wait_for(reading, 20, "the read of the slow meter to start", every=0.01)
        asked.cancel()
        with self.assertRaises(ResponseNeverReceived):
            await asked

        async def stored() -> bool:
            await self.ctx.router.flush(1)
            return bool(await self.ctx.store.readings("slow"))

        await wait_for(stored, 20, "the abandoned read's records in the store")
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_read_of_an_unreachable_meter_names_it(self) -> None:
        await self.serve()
        r = await http(f"{self.base}/api/v1/meters/m2/read", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 502)
        self.assertIn("meter m2 (route tcp:host=127.0.0.1:port=1, protocol iec62056-21): ",
                      r.json()["error"])
        self.assertEqual(self.ctx.activity.last["m2"].ok, False)

    async def test_read_with_options_and_bad_bodies(self) -> None:
        await self.serve()
        r = await http(f"{self.base}/api/v1/meters/m1/read", method=b"POST",
                       token=OPERATOR_TOKEN, body=b"{not json")
        self.assertEqual(r.status, 400)
        r = await http(f"{self.base}/api/v1/meters/m1/read", method=b"POST",
                       token=OPERATOR_TOKEN, body=b'{"options": 3}')
        self.assertEqual(r.status, 400)
        # IEC 62056-21 readouts take no per-read option: a setting of the meter list is no
        # option of a read (fep.operator.readoptions), and the refusal names it.
        r = await http(f"{self.base}/api/v1/meters/m1/read", method=b"POST",
                       token=OPERATOR_TOKEN, body=b'{"options": {"iec_mode": "C"}}')
        self.assertEqual(r.status, 400)
        self.assertIn("iec_mode", r.json()["error"])
        await self.get("meters/m1/read", token=OPERATOR_TOKEN, method=b"POST",
                       body=b'{"options": {}}')

    async def test_json_nested_deeper_than_400_levels_is_refused_with_400(self) -> None:
        await self.serve()
        url = f"{self.base}/api/v1/meters/m1/commands"
        for depth in (401, 50_000):
            body = b'{"action": "reconnect", "params": ' + b"[" * depth + b"]" * depth + b"}"
            r = await http(url, method=b"POST", token=OPERATOR_TOKEN, body=body)
            self.assertEqual(r.status, 400, depth)
            self.assertIn("deeper than 400", r.json()["error"])
        body = b'{"action": "reconnect", "params": {"x": ' + b"[" * 398 + b"]" * 398 + b"}}"
        r = await http(url, method=b"POST", token=OPERATOR_TOKEN, body=body)
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_tasks_and_jobs_through_the_scheduler(self) -> None:
        await self.serve()
        self.assertEqual((await self.get("tasks"))["tasks"][0]["name"], "daily-profile")
        self.assertEqual((await self.get("jobs?limit=1"))["jobs"][0]["outcome"], "ok")
        r = await http(f"{self.base}/api/v1/tasks/daily-profile/run", method=b"POST",
                       token=VIEWER_TOKEN)
        self.assertEqual(r.status, 403)
        self.assertEqual(self.scheduler.runs, [])
        ran = await self.get("tasks/daily-profile/run", token=OPERATOR_TOKEN, method=b"POST")
        self.assertEqual(ran, {"task": "daily-profile", "queued": 1})
        r = await http(f"{self.base}/api/v1/tasks/nope/run", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 404)

    async def test_meter_commands_follow_the_engines_approval_rules(self) -> None:
        await self.serve()
        url = f"{self.base}/api/v1/meters/m1/commands"
        r = await http(url, method=b"POST", token=VIEWER_TOKEN, body=b'{"action": "reconnect"}')
        self.assertEqual(r.status, 403)
        asked = await self.get("meters/m1/commands", token=OPERATOR_TOKEN, method=b"POST",
                               body=b'{"action": "disconnect", "params": {"reason": "debt"}}')
        self.assertEqual((asked["status"], asked["requested_by"]), ("requested", "api:alice"))
        # Four eyes: the requester cannot approve her own command; another operator can.
        r = await http(f"{self.base}/api/v1/commands/{asked['id']}/approve", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 403)  # forbidden to this operator, not a bad request
        self.assertIn("someone else", r.json()["error"])
        approved = await self.get(f"commands/{asked['id']}/approve", method=b"POST",
                                  token=SECOND_OPERATOR_TOKEN)
        self.assertEqual((approved["status"], approved["approved_by"]), ("queued", "api:bob"))
        # Approved already: approving or rejecting it again is a conflict with its state.
        for step in ("approve", "reject"):
            r = await http(f"{self.base}/api/v1/commands/{asked['id']}/{step}", method=b"POST",
                           token=SECOND_OPERATOR_TOKEN)
            self.assertEqual(r.status, 409, step)
            self.assertIn("not awaiting approval", r.json()["error"])
        queued = await self.get("meters/m1/commands", token=OPERATOR_TOKEN, method=b"POST",
                                body=b'{"action": "reconnect"}')
        self.assertEqual(queued["status"], "queued")
        again = await self.get("meters/m1/commands", token=OPERATOR_TOKEN, method=b"POST",
                               body=b'{"action": "disconnect"}')
        rejected = await self.get(f"commands/{again['id']}/reject", method=b"POST",
                                  token=SECOND_OPERATOR_TOKEN, body=b'{"reason": "not now"}')
        self.assertEqual((rejected["status"], rejected["reason"]), ("rejected", "not now"))
        r = await http(f"{self.base}/api/v1/commands/{again['id']}/approve", method=b"POST",
                       token=SECOND_OPERATOR_TOKEN)
        self.assertEqual(r.status, 409)
        self.assertIn("is rejected, not awaiting approval", r.json()["error"])
        listed = await self.get("commands?limit=5")
        self.assertEqual([c["id"] for c in listed["commands"]], [3, 2, 1])
        for body, why in ((b'{"action": "explode"}', "unknown command"),
                          (b"{}", "action"), (b"[1]", "JSON object"),
                          (b'{"action": "reconnect", "params": 3}', "params")):
            r = await http(url, method=b"POST", token=OPERATOR_TOKEN, body=body)
            self.assertEqual(r.status, 400, body)
            self.assertIn(why, r.json()["error"])
        r = await http(f"{self.base}/api/v1/commands/x/approve", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 400)
        # A command id that names no command: not found, whichever step.
        for step in ("approve", "reject"):
            r = await http(f"{self.base}/api/v1/commands/999/{step}", method=b"POST",
                           token=SECOND_OPERATOR_TOKEN, body=b'{"reason": "x"}')
            self.assertEqual(r.status, 404, step)
            self.assertIn("no command 999", r.json()["error"])

    async def test_tasks_without_a_scheduler_answer_503(self) -> None:
        await self.serve(scheduler=False)
        for method, path in ((b"GET", "tasks"), (b"GET", "jobs"),
                             (b"POST", "tasks/daily-profile/run"), (b"GET", "commands"),
                             (b"POST", "commands/1/approve")):
            r = await http(f"{self.base}/api/v1/{path}", method=method, token=OPERATOR_TOKEN)
            self.assertEqual(r.status, 503, path)
            self.assertIn("scheduler", r.json()["error"])

    async def test_wrong_method_and_unknown_path(self) -> None:
        await self.serve()
        r = await http(f"{self.base}/api/v1/meters", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 405)
        r = await http(f"{self.base}/api/v1/nothing", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 404)
        r = await http(f"{self.base}/api/v2/meters", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 404)

    # -- the status page -------------------------------------------------------------------

    async def test_status_page_and_its_files_are_served_without_data(self) -> None:
        await self.serve()
        root = await http(f"{self.base}/")
        self.assertEqual(root.status, 302)
        page = await http(f"{self.base}/status")
        self.assertEqual(page.status, 200)
        self.assertIn(b'<script src="/static/fepchart.js">', page.body)
        self.assertNotIn(b"m1", page.body)
        for name, kind in (("fepchart.js", b"text/javascript"), ("status.js", b"text/javascript"),
                           ("status.css", b"text/css")):
            r = await http(f"{self.base}/static/{name}")
            self.assertEqual(r.status, 200, name)
            self.assertTrue(r.headers.getRawHeaders(b"content-type")[0].startswith(kind))
        for bad in ("../http.py", "..%2Fhttp.py", "nothing.js", "__init__.py"):
            self.assertEqual((await http(f"{self.base}/static/{bad}")).status, 404, bad)


class PlugPointTests(unittest.TestCase):
    def test_the_fakes_provide_the_interfaces_they_stand_in_for(self) -> None:
        from zope.interface.verify import verifyObject

        from fep.operator.activity import Activity
        from fep.operator.interfaces import IScheduler, ISessionRegistry

        self.assertTrue(verifyObject(IScheduler, FakeScheduler()))
        self.assertTrue(verifyObject(ISessionRegistry, Activity()))


class TokenFileTests(unittest.TestCase):
    def test_roles_lines_and_errors(self) -> None:
        from fep.errors import ConfigError

        tokens = TokenFile.parse(TOKENS)
        viewer = tokens.user(VIEWER_TOKEN.encode())
        assert viewer is not None
        self.assertEqual((viewer.name, viewer.role), ("watch", "viewer"))
        self.assertIsNone(tokens.user(b""))
        self.assertIsNone(tokens.user(None))
        for bad, why in (("a viewer", "NAME ROLE TOKEN"), ("a boss 0123456789abcdef", "role"),
                         ("a viewer short", "shorter")):
            with self.assertRaises(ConfigError) as caught:
                TokenFile.parse(bad, "tokens.txt")
            self.assertIn(why, str(caught.exception))
            self.assertIn("tokens.txt", str(caught.exception))


class OpenApiTests(unittest.TestCase):
    def test_the_description_lists_every_route_with_its_method(self) -> None:
        import re
        from pathlib import Path

        from fep.operator.http import Api

        text = (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
        documented: set[tuple[str, str]] = set()
        path = None
        for line in text.splitlines():
            m = re.match(r"^  (/\S+):$", line)
            if m:
                path = m.group(1)
                continue
            m = re.match(r"^    (get|post):$", line)
            if m and path is not None:
                documented.add((m.group(1).upper(), path))
        routes = {
            (method.decode(), "/" + "/".join(
                {"meters": "{meter}", "tasks": "{task}", "commands": "{command}",
                 "plans": "{plan}", "edits": "{edit}"}[pattern[0]]
                if p == "*" else p for p in pattern))
            for method, pattern, _ in Api(None).routes  # type: ignore[arg-type]
        }
        self.assertEqual(documented, routes)


class InboundSessionTests(unittest.TestCase):
    async def test_a_gprs_registry_s_sessions_are_listed_as_inbound(self) -> None:
        from datetime import UTC, datetime

        import attrs as attrs_

        @attrs_.frozen
        class GprsSnapshot:
            """The GPRS channel's session snapshot, in its shape (fep.channels.gprs)."""

            meter: str | None
            since: datetime
            peer: str
            listener: str

            def as_dict(self) -> dict[str, object]:
                return {"meters": [self.meter], "peer": self.peer, "frames": 3}

        class Registry:
            def sessions(self) -> list[GprsSnapshot]:
                return [GprsSnapshot("m9", datetime(2026, 3, 1, tzinfo=UTC), "10.0.0.7:4000",
                                     "tcp:4059")]

        ctx = await make_context(self, [])
        ctx.sessions = Registry()  # type: ignore[assignment]
        [session] = ctx.live_sessions()
        self.assertEqual((session.meter, session.direction, session.channel, session.remote),
                         ("m9", "inbound", "gprs", "10.0.0.7:4000"))
        self.assertEqual(session.as_dict()["details"]["frames"], 3)
        from fep.operator.metrics import FepMetrics

        metrics = FepMetrics.create(ctx)
        from prometheus_client import generate_latest

        text = generate_latest(metrics.registry).decode()
        self.assertIn('fep_sessions{channel="gprs",direction="inbound"} 1.0', text)


class ErrorNamingTests(unittest.TestCase):
    """A 502's text names the meter or concentrator once (the errors from the channels and
    protocols often name it already)."""

    def test_named_once(self) -> None:
        from fep.operator.http import _naming

        self.assertEqual(_naming("concentrator C1: no answer", "concentrator", "C1"),
                         "concentrator C1: no answer")
        self.assertEqual(_naming("meter C1 on tcp:h:1 (gw3761): timed out", "concentrator",
                                 "C1"), "meter C1 on tcp:h:1 (gw3761): timed out")
        self.assertEqual(_naming("timed out", "concentrator", "C1"),
                         "concentrator C1: timed out")
        self.assertEqual(_naming("meter C10: x", "meter", "C1"), "meter C1: meter C10: x")
