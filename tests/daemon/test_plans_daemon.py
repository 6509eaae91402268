"""A control plan disconnecting 500 simulated meters (under ``FEP_TEST_SCALE=full``; 120 in
``make test``, tests/scale.py) of mixed protocols (DLMS over HDLC and
DL/T 645 on a few simulated buses, TCP ports standing in for serial servers, one line each;
ANSI C12.18 meters each on its own line) through the real daemon (`twistd -n fep` as a
child), the simulators served by the test's reactor:

- it cannot run unapproved, and its submitter cannot approve it (API, command line; the
  console in tests.operator.test_plan_doors);
- the rate holds, overall and per line, measured from the simulators' own records of when
  each disconnected;
- a meter that refuses is retried, then reported failed with its reason; a meter whose
  protocol has no disconnect is reported not supported;
- a pause (from the command line, on the store: the daemon is not told) and a cancel (API)
  stop new commands within one second;
- every meter's outcome and the audit trail (plan and commands) are stored.

The fleet is built per protocol (``FLEETS``, ``MIX``): each protocol's builder serves its
simulated meters on its lines and says when each disconnected (the simulators note the time
their relay opened), so another protocol joins with one builder."""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms.apdu import DataAccessResult
from fep.protocols.dlms.cosem import ControlState
from fep.protocols.dlms.server import ServerSettings
from fep.sim import dlms_meter
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter
from fep.sim.bus import BusMember, SimulatedBusFactory
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
from tests.daemon.harness import (
    ROOT,
    Daemon,
    add_meters,
    free_port,
    sleep,
    sqlite_rows,
    wait_for,
    write_config,
)
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    http,
    write_tokens,
)
from tests.scale import scaled

# Sizes: 500 meters under FEP_TEST_SCALE=full (make test-full), 120 in make test
# (tests/scale.py), at half the rate so that what is left after the cancel point still takes
# as long (a command-line call between two points may take seconds on a loaded machine).
RATE = float(scaled(600, 300))  # meters a minute overall: 10 (5) a second
LINE_RATE = float(scaled(150, 75))  # meters a minute on each line: 2.5 (1.25) a second
SLACK = 0.1  # fep.collect.plans.SLACK
GROUP = "arrears"
# How many meters of each protocol the plan disconnects, and on how many lines (buses; a C12
# meter is alone on its line).
MIX = {"dlms": (scaled(200, 48), 2), "dlt645": (scaled(150, 36), 2),
       "ansi-c12": (scaled(150, 36), scaled(150, 36))}
# The plan is paused after this many meters are disconnected, and cancelled after that many.
PAUSE_AT = scaled(100, 12)
CANCEL_AT = scaled(300, 36)


@attrs.define
class Fleet:
    """Simulated meters of one protocol on their lines: the meter list's entries, each
    meter's line, and when each disconnected (wall clock, from the simulators)."""

    meters: list[Meter]
    line_of: dict[str, str]
    disconnects: Callable[[], dict[str, list[float]]]
    # Whether a meter's relay is closed now (from its simulator).
    connected: Callable[[str], bool]
    # A meter that refuses every disconnect, and when it was asked.
    refusing: str | None = None
    refused: Callable[[], list[float]] = list


class RefusingMeter(dlms_meter.SimulatedDlmsMeter):
    """Refuses the disconnect (hardware fault), noting each time it was asked."""

    def action(self, method: Any, parameters: Any) -> Any:
        if method.instance == dlms_meter.DISCONNECT:
            self.__dict__.setdefault("asked", []).append(time.time())
            return DataAccessResult.HARDWARE_FAULT, None
        return super().action(method, parameters)


def dlms_fleet(testcase: unittest.TestCase, ids: list[str], lines: int) -> Fleet:
    """DLMS meters over HDLC, physical addresses 16, 17, ... on each of ``lines`` buses;
    the first meter refuses the disconnect."""
    sims: dict[str, dlms_meter.SimulatedDlmsMeter] = {}
    meters: list[Meter] = []
    line_of: dict[str, str] = {}
    for line, chunk in enumerate(_chunks(ids, lines)):
        members = []
        for n, meter_id in enumerate(chunk):
            sim = (RefusingMeter if not sims else dlms_meter.SimulatedDlmsMeter)(
                serial=f"SIM{len(sims):07d}")
            sims[meter_id] = sim
            members.append(BusMember(meter_id, DlmsMeterServerFactory(
                sim, ServerSettings(), hdlc=True, physical_address=16 + n)))
        route = _serve(testcase, SimulatedBusFactory(members))
        for n, meter_id in enumerate(chunk):
            meters.append(Meter(meter_id, "dlms", f"{route}@1/{16 + n}",
                                metadata={"dlms_link": "hdlc", "group": GROUP}))
            line_of[meter_id] = f"dlms-bus-{line}"

    def disconnects() -> dict[str, list[float]]:
        return {m: [t.timestamp() for t, code in sim.events if code == 61]
                for m, sim in sims.items()}

    def connected(meter_id: str) -> bool:
        return sims[meter_id].control_state == ControlState.CONNECTED

    first = ids[0]
    return Fleet(meters, line_of, disconnects, connected, refusing=first,
                 refused=lambda: list(sims[first].__dict__.get("asked", [])))


class TimedDlt645Meter(SimulatedDlt645Meter):
    """Notes when its relay was tripped."""

    def _relay_control(self, request: Any) -> Any:
        answer = super()._relay_control(request)
        if self.log and self.log[-1] == "relay control trip":
            self.__dict__.setdefault("trips", []).append(time.time())
        return answer


def dlt645_fleet(testcase: unittest.TestCase, ids: list[str], lines: int) -> Fleet:
    """DL/T 645-2007 meters with consecutive addresses on ``lines`` buses."""
    sims: dict[str, SimulatedDlt645Meter] = {}
    meters: list[Meter] = []
    line_of: dict[str, str] = {}
    for line, chunk in enumerate(_chunks(ids, lines)):
        on_line = [TimedDlt645Meter(address=f"{202400000000 + len(sims) + n:012d}")
                   for n in range(len(chunk))]
        route = _serve(testcase, Dlt645BusFactory(on_line, reactor))
        for meter_id, sim in zip(chunk, on_line, strict=True):
            sims[meter_id] = sim
            meters.append(Meter(meter_id, "dlt645", f"{route}@{sim.address}", metadata={
                "dlt645_password": "02123456", "dlt645_operator": "20241207",
                "group": GROUP}))
            line_of[meter_id] = f"dlt645-bus-{line}"

    def disconnects() -> dict[str, list[float]]:
        return {m: list(sim.__dict__.get("trips", [])) for m, sim in sims.items()}

    def connected(meter_id: str) -> bool:
        return sims[meter_id].relay_closed or not sims[meter_id].relay_command_open

    return Fleet(meters, line_of, disconnects, connected)


class TimedC12Meter(SimulatedC12Meter):
    """Notes when its relay was opened."""

    def _relay(self, params: bytes) -> tuple[int, bytes]:
        was = self.relay_closed
        answer = super()._relay(params)
        if was and not self.relay_closed:
            self.__dict__.setdefault("opened", []).append(time.time())
        return answer


def c12_fleet(testcase: unittest.TestCase, ids: list[str], lines: int) -> Fleet:
    """ANSI C12.18 meters, each on its own port (a point-to-point line), with the
    simulator's relay procedure."""
    sims: dict[str, SimulatedC12Meter] = {}
    meters: list[Meter] = []
    for meter_id in ids:
        sim = TimedC12Meter()
        sims[meter_id] = sim
        route = _serve(testcase, C12MeterServerFactory(sim, reactor))
        meters.append(Meter(meter_id, "ansi-c12.18", route, metadata={
            "c12_password": "secret", "c12_relay_procedure": "MP2", "group": GROUP}))

    def disconnects() -> dict[str, list[float]]:
        return {m: list(sim.__dict__.get("opened", [])) for m, sim in sims.items()}

    def connected(meter_id: str) -> bool:
        return sims[meter_id].relay_closed

    return Fleet(meters, {m.id: m.id for m in meters}, disconnects, connected)


def _chunks(ids: list[str], lines: int) -> list[list[str]]:
    per_line = -(-len(ids) // lines)
    return [ids[i : i + per_line] for i in range(0, len(ids), per_line)]


def _serve(testcase: unittest.TestCase, factory: Any) -> str:
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return f"tcp:host=127.0.0.1:port={port.getHost().port}"


FLEETS: dict[str, Callable[[unittest.TestCase, list[str], int], Fleet]] = {
    "dlms": dlms_fleet, "dlt645": dlt645_fleet, "ansi-c12": c12_fleet}


def fleet_ids(mix: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    """Meter ids per protocol, numbered round robin across the protocols (``m0000``,
    ``m0001``, ...): the plan, in meter-list order, goes through the protocols side by
    side."""
    left = {protocol: count for protocol, (count, _) in mix.items()}
    out: dict[str, list[str]] = {protocol: [] for protocol in mix}
    n = 0
    while any(left.values()):
        for protocol in mix:
            if left[protocol]:
                out[protocol].append(f"m{n:04d}")
                left[protocol] -= 1
                n += 1
    return out


def most_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class PlanDaemonTests(unittest.TestCase):
    timeout = 400

    async def test_a_plan_disconnects_hundreds_of_meters_at_its_rate(self) -> None:
        me = pwd.getpwuid(os.getuid()).pw_name
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        ids = fleet_ids(MIX)
        fleets = [FLEETS[protocol](self, ids[protocol], lines)
                  for protocol, (_, lines) in MIX.items()]
        meters = [m for f in fleets for m in f.meters]
        line_of = {k: v for f in fleets for k, v in f.line_of.items()}
        # An IEC 62056-21 meter of the group: its protocol has no disconnect.
        meters.append(Meter("iec-0000", "iec62056-21", "tcp:host=127.0.0.1:port=1",
                            metadata={"group": GROUP}))
        await add_meters(f"sqlite:{db}", meters)
        tokens = write_tokens(workdir / "tokens")
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600,
            default_task=False, collect_extra="concurrency = 50\npoll = 0.5\n",
            extra=f"[http]\nport = {http_port}\ntokens_file = {tokens}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        base = f"http://127.0.0.1:{http_port}/api/v1"
        rows = partial(sqlite_rows, db)

        async def api(path: str, token: str = OPERATOR_TOKEN, body: Any = None,
                      status: int = 200) -> Any:
            r = await http(f"{base}/{path}", token=token,
                           method=b"GET" if body is None else b"POST",
                           body=None if body is None else json.dumps(body).encode())
            self.assertEqual(r.status, status, r.body)
            return r.json()

        async def fep(*args: str, token: str | None = None, code: int = 0) -> str:
            """`fep` as a child process: the simulators (on this reactor) go on meanwhile."""
            env = {k: v for k, v in os.environ.items() if k != "FEP_TOKEN"}
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            if token:
                env["FEP_TOKEN"] = token
            out, err, status = await getProcessOutputAndValue(
                sys.executable, ["-m", "fep.cli", "--config", str(config), *args], env=env,
                path=str(ROOT), reactor=reactor)
            self.assertEqual(status, code, err)
            return (out if code == 0 else err).decode()

        async def up() -> bool:
            try:
                return (await http(f"{base}/stats", token=OPERATOR_TOKEN)).status == 200
            except Exception:
                return False

        await wait_for(up, 60, "the daemon's API")

        def disconnected() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {}
            for f in fleets:
                out.update({m: t for m, t in f.disconnects().items() if t})
            return out

        # alice (API) makes the plan and submits it.
        plan = await api("plans", body={
            "name": "arrears", "action": "disconnect", "target": f"group:{GROUP}",
            "rate": RATE, "line_rate": LINE_RATE, "attempts": 2, "retry_delay": 1,
            "deadline": "1h"})
        pid = plan["id"]
        self.assertEqual((plan["meters"], plan["counts"]["not-supported"]),
                         (len(meters), 1))
        # It cannot run unapproved.
        await api(f"plans/{pid}/start", body={}, status=409)
        await api(f"plans/{pid}/submit", body={})
        refused = await api(f"plans/{pid}/start", body={}, status=409)
        self.assertIn("is submitted: it cannot start", refused["error"])
        self.assertIn("cannot start", await fep("plans", "start", str(pid), code=2))
        # Its submitter cannot approve it, through the API or the command line.
        own = await api(f"plans/{pid}/approve", body={}, status=403)
        self.assertIn("someone else must approve it", own["error"])
        self.assertIn("someone else must approve it",
                      await fep("plans", "approve", str(pid), token=OPERATOR_TOKEN, code=2))
        await sleep(1.5)  # a quiet period: nothing may happen
        self.assertEqual(disconnected(), {})
        self.assertEqual(rows("SELECT COUNT(*) FROM commands"), [(0,)])
        # bob approves (command line, his token); alice starts it (API).
        self.assertIn("approved (approve by cli:bob)",
                      await fep("plans", "approve", str(pid), token=SECOND_OPERATOR_TOKEN))
        await api(f"plans/{pid}/start", body={})

        def started_after(at: float) -> list[tuple[str, float]]:
            """Jobs of the plan's commands that started after ``at``."""
            return [(m, t) for m, t in rows(
                "SELECT j.meter, j.started_at FROM jobs j JOIN plan_meters pm ON"
                f" pm.command = j.command WHERE pm.plan = {pid} AND j.started_at > {at}")]

        async def at_least(n: int) -> bool:
            return len(disconnected()) >= n

        await wait_for(partial(at_least, PAUSE_AT), 120, f"{PAUSE_AT} meters disconnected",
                       every=0.05)
        # A pause from the command line (on the store; the daemon is not told).
        self.assertIn("paused", await fep("plans", "pause", str(pid)))
        (paused_at,) = [t for (t,) in rows(
            f"SELECT at FROM plan_audit WHERE plan = {pid} AND action = 'paused'")]
        await sleep(2.5)  # the quiet period under test
        after = [t for ts in disconnected().values() for t in ts if t > paused_at + 1.0]
        self.assertEqual(after, [], f"disconnects more than 1 s after the pause at {paused_at}")
        held = len(disconnected())
        self.assertEqual(rows(f"SELECT COUNT(*) FROM plan_meters WHERE plan = {pid}"
                              " AND state = 'released'"), [(0,)])
        # No command of the plan started after the pause (the daemon's own record).
        self.assertEqual(started_after(paused_at), [])
        # Resumed and then cancelled through the API (a command-line call, a new process,
        # can take longer on a loaded machine than what is left of the plan after the
        # cancel point; the command line's start is tested above and in test_plan_doors).
        await api(f"plans/{pid}/start", body={})
        # At least one meter more than the pause held: on a loaded machine the pause (a new
        # command-line process) can land after CANCEL_AT meters already.
        cancel_at = max(CANCEL_AT, held + 1)
        await wait_for(partial(at_least, cancel_at), 120, f"{cancel_at} meters disconnected",
                       every=0.05)
        await api(f"plans/{pid}/cancel", SECOND_OPERATOR_TOKEN, {"reason": "storm"})
        (cancelled_at,) = [t for (t,) in rows(
            f"SELECT at FROM plan_audit WHERE plan = {pid} AND action = 'cancelled'")]

        async def settled() -> bool:
            found = rows(f"SELECT COUNT(*) FROM plan_meters WHERE plan = {pid}"
                         " AND state IN ('pending', 'released')")
            return bool(found) and found[0][0] == 0

        await wait_for(settled, 60, "every meter's outcome")
        self.assertEqual(started_after(cancelled_at), [])
        await sleep(2.0)  # the quiet period under test
        done = disconnected()
        after = [t for ts in done.values() for t in ts if t > cancelled_at + 1.0]
        self.assertEqual(after, [], "disconnects more than 1 s after the cancel")
        self.assertGreater(len(done), held)

        # Every meter's outcome.
        outcomes = {m: (s, r, n) for m, s, r, n in rows(
            f"SELECT meter, state, reason, attempts FROM plan_meters WHERE plan = {pid}")}
        self.assertEqual(len(outcomes), len(meters))
        by_state: dict[str, set[str]] = {}
        for m, (s, _, _) in outcomes.items():
            by_state.setdefault(s, set()).add(m)
        refusing = [f.refusing for f in fleets if f.refusing]
        self.assertEqual(by_state["done"], set(done) - set(refusing))
        self.assertEqual(by_state["not-supported"], {"iec-0000"})
        self.assertIn("does not support", outcomes["iec-0000"][1])
        self.assertEqual(by_state["failed"], set(refusing))
        for f in fleets:
            if f.refusing:
                state, reason, attempts = outcomes[f.refusing]
                self.assertEqual((state, attempts), ("failed", 2), reason)
                asked = f.refused()
                self.assertEqual(len(asked), 2)  # retried once, then reported
                self.assertGreaterEqual(asked[1] - asked[0], 1.0 - 0.05)
                self.assertTrue(reason)
        self.assertEqual(set(outcomes), set().union(*by_state.values()))
        self.assertEqual(by_state["skipped"],
                         set(outcomes) - by_state["done"] - by_state["failed"]
                         - by_state["not-supported"])
        self.assertTrue({r for m, (s, r, _) in outcomes.items() if s == "skipped"}
                        <= {"cancelled by api:bob: storm", "cancelled by api:bob"})
        for f in fleets:
            for m in by_state["done"] & {x.id for x in f.meters}:
                self.assertEqual(len(f.disconnects()[m]), 1, m)  # once each
        # The rate where the plan holds it: its releases keep the limiter's bound exactly.
        released = {m: float(t) for m, t in rows(
            f"SELECT meter, released_at FROM plan_meters WHERE plan = {pid}"
            " AND released_at IS NOT NULL")}
        for width in (2.0, 5.0, 10.0):
            allowed = (width + SLACK) * RATE / 60 + 1
            self.assertLessEqual(most_in_window(sorted(released.values()), width), allowed,
                                 f"releases, overall, {width} s")
        # And at the meters, from the simulators' own times: a command reaches its meter
        # some time after its release (behind its line's session, the job's lease, a busy
        # machine), so in any window the meters see at most the releases of that window
        # widened by the longest such delay.
        lag = max(ts[0] - released[m] for m, ts in done.items() if ts and m in released)
        times = [t for m, ts in done.items() for t in ts]
        for width in (2.0, 5.0, 10.0):
            allowed = (width + max(lag, 0.0) + SLACK) * RATE / 60 + 1
            self.assertLessEqual(most_in_window(times, width), allowed,
                                 f"overall, {width} s (longest delay {lag:.2f} s)")
        per_line: dict[str, list[float]] = {}
        released_on: dict[str, list[float]] = {}
        for m, ts in done.items():
            per_line.setdefault(line_of[m], []).extend(ts)
            if m in released:
                released_on.setdefault(line_of[m], []).append(released[m])
        self.assertGreater(len(per_line), 1)
        for line, ts in per_line.items():
            allowed = (5.0 + SLACK) * LINE_RATE / 60 + 1
            self.assertLessEqual(most_in_window(sorted(released_on[line]), 5.0), allowed,
                                 f"releases on {line}")
            allowed = (5.0 + max(lag, 0.0) + SLACK) * LINE_RATE / 60 + 1
            self.assertLessEqual(most_in_window(ts, 5.0), allowed, line)
        # The plan's audit trail and each command's. Its last line is written by the
        # node's next plan pass after every meter ended: waited for, not assumed.
        async def ended_line() -> bool:
            return bool(rows(f"SELECT 1 FROM plan_audit WHERE plan = {pid}"
                             " AND action = 'ended'"))

        await wait_for(ended_line, 60, "the plan's ended line in its audit trail")
        trail = [(who, action) for who, action in rows(
            f"SELECT who, action FROM plan_audit WHERE plan = {pid} ORDER BY id")]
        self.assertEqual(trail, [
            ("api:alice", "created"), ("api:alice", "submitted"), ("cli:bob", "approved"),
            ("api:alice", "started"), (f"cli:{me}", "paused"), ("api:alice", "resumed"),
            ("api:bob", "cancelled"), ("test", "ended")])
        some = sorted(by_state["done"])[0]
        ((command,),) = rows(f"SELECT command FROM plan_meters WHERE plan = {pid}"
                             f" AND meter = '{some}'")
        audit = rows(f"SELECT who, action, detail FROM command_audit WHERE command = {command}"
                     " ORDER BY id")
        self.assertEqual([(w, a) for w, a, _ in audit], [
            ("api:alice", "requested"), ("cli:bob", "approved"), ("test", "queued"),
            ("test", "started"), ("test", "done")])
        self.assertEqual(audit[1][2], f"approved via plan {pid}")
        (status, approved_by), = rows(f"SELECT status, approved_by FROM commands"
                                      f" WHERE id = {command}")
        self.assertEqual((status, approved_by), ("done", "cli:bob"))
        shown = await api(f"plans/{pid}")
        self.assertEqual(shown["status"], "cancelled")
        self.assertEqual(sum(shown["counts"].values()), len(meters))

        # A second plan runs to its end: reconnect a few of the disconnected meters.
        back = sorted(by_state["done"])[:10]
        second = await api("plans", SECOND_OPERATOR_TOKEN, {
            "action": "reconnect", "meters": back, "rate": RATE})
        await api(f"plans/{second['id']}/submit", SECOND_OPERATOR_TOKEN, {})
        await api(f"plans/{second['id']}/approve", body={})
        await api(f"plans/{second['id']}/start", SECOND_OPERATOR_TOKEN, {})

        async def second_done() -> bool:
            return (await api(f"plans/{second['id']}"))["status"] == "done"

        await wait_for(second_done, 60, "the second plan to end")
        ended = await api(f"plans/{second['id']}")
        self.assertEqual(ended["counts"]["done"], 10)
        self.assertEqual(ended["progress"], 1.0)
        for f in fleets:
            ids = {m.id for m in f.meters}
            for m in back:
                if m in ids:
                    self.assertTrue(f.connected(m), m)
            for m in by_state["done"] - set(back):
                if m in ids:
                    self.assertFalse(f.connected(m), m)
        stats = await api("stats")
        self.assertEqual({p["id"] for p in stats["plans"]}, {pid, second["id"]})
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
