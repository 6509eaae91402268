"""Two fep daemons on one PostgreSQL read the same keyed DLMS meters in turn (issue 14): the
invocation counters fep sends with live in the store, so even under one shared client system
title no (title, counter) pair, the AES-GCM nonce with the meter's key, ever repeats; by
default each node ciphers under its own title, derived from its node name. The simulated
meters record every counter they are sent. Which node takes a run's jobs is forced by
pinning them to it."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.jobstore import job_store
from fep.collect.limits import ResourcePolicy
from fep.collect.scheduler import expand
from fep.collect.tasks import Priority, Task
from fep.model import Meter
from fep.protocols.dlms.identity import node_system_title
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory
from fep.sim.dlms_meter import SimulatedDlmsMeter
from fep.store import open_store
from tests.collect.harness import listen
from tests.daemon.harness import Daemon, wait_for
from tests.postgres import fresh_database

SHARED_TITLE = "4645500000000042"
RUNS = 6  # a, b, a, b, a, b


def config(workdir: Path, url: str, node: str) -> Path:
    path = workdir / f"{node}.ini"
    path.write_text(
        f"[fep]\nnode = {node}\ndata_dir = {workdir / node}\n"
        f"[store]\nurl = {url}\n"
        "[spool]\nmax_delay = 0.02\n"
        "[collect]\ntimeout = 5\nconcurrency = 3\nlease = 5\npoll = 0.1\n"
        "default_task = no\n"
        f"[log]\nlevel = info\njson_file = {workdir / node}/fep.log.json\n"
    )
    return path


class TwoNodeCounterTests(unittest.TestCase):
    timeout = 240

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall()
        finally:
            conn.close()

    async def run_on(self, node: str) -> dict[str, tuple[str, str]]:
        """One run of the task, taken by ``node``: its jobs are pinned to it. (Freezing the
        other node with SIGSTOP instead could freeze it inside its lease transaction,
        holding the lease lock, and the run would wait for it.)"""
        store = open_store(self.url, reactor)
        await store.open()
        try:
            jobs = job_store(store)
            task = await jobs.task("regs")
            assert task is not None
            due = time.time()
            new = [attrs.evolve(job, pinned=node) for job in
                   expand(task, await store.meters(), due, ResourcePolicy(),
                          priority=Priority.ON_DEMAND)]
            self.assertEqual(await jobs.add_jobs(new, due), 2)
        finally:
            await store.close()

        async def done() -> bool:
            rows = self.sql("SELECT meter, status FROM jobs WHERE due = %s", due)
            return len(rows) == 2 and all(s in ("done", "failed") for _, s in rows)

        await wait_for(done, 60, f"node {node}'s run", every=0.1)
        rows = self.sql("SELECT meter, status, node, error FROM jobs WHERE due = %s", due)
        return {m: (s, n or "", e or "") for m, s, n, e in rows}  # type: ignore[misc]

    async def test_two_nodes_never_repeat_an_invocation_counter(self) -> None:
        self.url = fresh_database(self)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        keys = SecurityKeys(EXAMPLE_EK, EXAMPLE_AK)
        sims: dict[str, DlmsMeterServerFactory] = {}
        meters = []
        for n, (meter_id, extra) in enumerate((
            ("shared-title", {"dlms_system_title": SHARED_TITLE}),
            ("node-titles", {}),
        )):
            title = bytes.fromhex(f"4D4D4D00000000{n + 1:02X}")
            factory = DlmsMeterServerFactory(
                SimulatedDlmsMeter(serial=f"SIM{n}", system_title=title),
                ServerSettings(system_title=title, keys=keys))
            port = listen(self, factory)
            sims[meter_id] = factory
            meters.append(Meter(meter_id, "dlms", f"tcp:host=127.0.0.1:port={port}", metadata={
                "dlms_server_system_title": title.hex(), "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(), **extra}))
        store = open_store(self.url, reactor)
        await store.open()
        await store.add_meters(meters)
        await job_store(store).save_task(
            Task(name="regs", kind="registers", schedule="every 1d",
                 items="3/1.0.1.8.0.255/2", retries=0, next_due=time.time() + 86400),
            time.time())
        await store.close()

        nodes = {name: Daemon(config(workdir, self.url, name), workdir / name)
                 for name in ("a", "b")}
        for name, daemon in nodes.items():
            (workdir / name).mkdir()
            daemon.log = workdir / f"{name}.twistd.log"
            daemon.start()
            self.addCleanup(daemon.kill)

        async def both_up() -> bool:
            return all(f"fep node {name} running" in d.log_text() for name, d in nodes.items())

        await wait_for(both_up, 60, "both nodes to start")
        for k in range(RUNS):
            node = "ab"[k % 2]
            jobs = await self.run_on(node)
            self.assertEqual(jobs, {m.id: ("done", node, "") for m in meters},
                             (nodes[node].log_text()[-3000:], {k: f.errors for k, f in
                                                               sims.items()}))

        for meter_id, factory in sims.items():
            self.assertEqual(factory.errors, [], meter_id)
            repeated = [pair for pair, n in Counter(factory.seen_counters).items() if n > 1]
            self.assertEqual(repeated, [], meter_id)
            self.assertGreaterEqual(len(factory.seen_counters), RUNS * 2, meter_id)
        # One title for both nodes where the meter list says so: the store's counters
        # alone keep them apart.
        self.assertEqual({t for t, _ in sims["shared-title"].seen_counters},
                         {bytes.fromhex(SHARED_TITLE)})
        # By default each node has its own.
        self.assertEqual({t for t, _ in sims["node-titles"].seen_counters},
                         {node_system_title("a"), node_system_title("b")})
        readings = dict(self.sql("SELECT meter, count(*) FROM readings GROUP BY meter"))
        self.assertEqual(readings, {m.id: RUNS for m in meters})
        for daemon in nodes.values():
            self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
