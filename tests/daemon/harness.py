"""Running the real fep daemon (`twistd -n fep`) as a child process in tests, next to
simulated meters served by the test's own reactor."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import deferLater

from fep.model import Meter
from fep.sim.iec62056_21 import PushingMeterProtocol, SimulatedIecMeter
from fep.store import open_store

ROOT = Path(__file__).resolve().parent.parent.parent


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port for a child process to listen on, where the test must write the port
    into the child's configuration before it starts. Prefer ``tcp:0`` and reading the bound
    port back (`Daemon.bound_port`).

    The port is picked at random below the kernel's ephemeral range and checked free: a port
    that ``bind(0)`` handed out could be given again, before the child binds it, as the
    source port of any outgoing connection (hundreds of them under load); ports outside the
    ephemeral range are never handed out that way."""
    low, _ = _ephemeral_range()
    first = max(1024, low - 12000)
    for _ in range(200):
        port = random.randrange(first, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sleep(seconds: float) -> None:
    """A fixed wait on the wall clock: only where the time itself is under test (an outage of
    a given length, a quiet period in which nothing may arrive); wait on an event otherwise."""
    await deferLater(reactor, seconds, lambda: None)


def _default_sigint() -> None:
    """In the child, before exec: SIGINT back to its default. A shell running the tests in
    the background ignores SIGINT, the child inherits that, and twistd then installs no
    handler for it, so `Daemon.interrupt` would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await sleep(every)


def write_config(
    workdir: Path,
    store_url: str,
    *,
    push_port: int,
    period: float = 1.0,
    collect: bool = True,
    extra: str = "",
    dlms_push_port: int | None = None,
    default_task: bool = True,
    collect_extra: str = "",
) -> Path:
    config = workdir / "fep.ini"
    config.write_text(
        f"[fep]\nnode = test\ndata_dir = {workdir}\n"
        f"[store]\nurl = {store_url}\n"
        f"[spool]\nmax_delay = 0.02\nflush_timeout = 20\n"
        f"[collect]\nperiod = {period}\ntimeout = 3\nenabled = {'yes' if collect else 'no'}\n"
        f"default_task = {'yes' if default_task else 'no'}\n"
        + collect_extra
        + f"[push]\niec62056_21 = tcp:{push_port}:interface=127.0.0.1\n"
        + (f"dlms = tcp:{dlms_push_port}:interface=127.0.0.1\n"
           if dlms_push_port is not None else "")
        + f"[log]\njson_file = {workdir}/fep.log.json\nlevel = debug\n"
        + extra
    )
    return config


class Daemon:
    """One `twistd -n fep` child process."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "twistd.log"
        self._log_start = 0

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        twistd = Path(sys.executable).parent / "twistd"
        # A restarted daemon appends to the same log: wait only on what this run writes.
        self._log_start = len(self.log_text())
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(twistd),
                    "--nodaemon",
                    "--pidfile=",
                    "--logfile=-",
                    "fep",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                env=env,
                preexec_fn=_default_sigint,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        process = self.process

        async def exited() -> bool:
            return process.poll() is not None

        await wait_for(exited, timeout, "the daemon to exit")
        return int(process.returncode)

    async def interrupt(self, timeout: float = 60) -> int:
        """SIGINT, as Ctrl-C; fires 0 for a clean stop. twistd re-raises the signal after its
        clean shutdown so that its parent sees how it ended: that counts as clean too."""
        self.signal(signal.SIGINT)
        code = await self.wait_exit(timeout)
        return 0 if code == -signal.SIGINT else code

    def kill(self) -> None:
        if self.running:
            self.signal(signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def logged(self, text: str, timeout: float = 60, count: int = 1) -> None:
        """Wait until ``text`` appears ``count`` times in the daemon's log (an event the
        test waits for instead of a fixed sleep); fails early if the daemon has exited."""

        async def seen() -> bool:
            if self.log_text()[self._log_start:].count(text) >= count:
                return True
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) before logging {text!r}:\n"
                    + self.log_text()[-3000:])
            return False

        await wait_for(seen, timeout, f"{text!r} in the daemon's log", every=0.05)

    async def bound_port(self, factory: str, timeout: float = 60) -> int:
        """The port a listener configured as ``tcp:0`` was given, read back from Twisted's
        ``<factory> starting on <port>`` log line (no free-port race)."""
        pattern = re.compile(rf"\b{re.escape(factory)} starting on (\d+)")
        await self.logged(f"{factory} starting on ", timeout)
        found = pattern.search(self.log_text()[self._log_start:])
        assert found is not None
        return int(found.group(1))

    async def ready(self, node: str = "test", timeout: float = 60) -> None:
        """Wait until the daemon has started every part (its "running" log line)."""
        await self.logged(f"fep node {node} running", timeout)


class CountingPushProtocol(PushingMeterProtocol):
    def push(self) -> None:
        super().push()
        self.factory.pushes += 1


class CountingPushFactory(ClientFactory):
    """A pushing meter that counts the readouts it has sent."""

    protocol = CountingPushProtocol

    def __init__(self, meter: SimulatedIecMeter, every: float) -> None:
        self.meter = meter
        self.every = every
        self.pushes = 0
        self.connections: list[CountingPushProtocol] = []

    def buildProtocol(self, addr: Any) -> CountingPushProtocol:
        p = CountingPushProtocol(self.meter, self.every, reactor)
        p.factory = self
        self.connections.append(p)
        return p

    def stop(self) -> None:
        for p in self.connections:
            if p._loop is not None and p._loop.running:
                p._loop.stop()


async def add_meters(store_url: str, meters: Sequence[Meter]) -> None:
    """Put ``meters`` in the store at ``store_url`` before the daemon starts on it."""
    store = open_store(store_url, reactor)
    await store.open()
    try:
        await store.add_meters(list(meters))
    finally:
        await store.close()


def sqlite_rows(db: Path, sql: str, *, strict: bool = False) -> list[tuple[Any, ...]]:
    """The rows ``sql`` selects from the daemon's SQLite store ``db``, on a connection of
    the test's own; none while the store cannot answer (tables not made yet, a write under
    way) unless ``strict``."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        if strict:
            raise
        return []
    finally:
        conn.close()


def store_count(store_url: str, sql: str) -> int:
    """``sql`` (a ``SELECT count(*) ...``) on the daemon's store at ``store_url`` (SQLite or
    PostgreSQL), on a connection of the test's own; 0 while the store cannot answer."""
    if store_url.startswith("sqlite:"):
        rows = sqlite_rows(Path(store_url.removeprefix("sqlite:")), sql)
        return int(rows[0][0]) if rows else 0
    import psycopg2

    conn = psycopg2.connect(store_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.fetchone()[0])
    except psycopg2.Error:
        return 0
    finally:
        conn.close()


async def committed(store_url: str, sql: str, expected: int, timeout: float = 60) -> None:
    """Wait until the store holds ``expected`` rows by ``sql`` (a count): a job is done once
    its records are in the daemon's spool, and the store commits them in its next batches,
    on a loaded machine a little later."""

    async def there() -> bool:
        return store_count(store_url, sql) >= expected

    await wait_for(there, timeout, f"{expected} rows committed ({sql})", every=0.2)
