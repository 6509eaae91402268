"""Running the real fep daemon (`twistd -n fep`) as a child process in tests, next to
simulated meters served by the test's own reactor."""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


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
) -> Path:
    config = workdir / "fep.ini"
    config.write_text(
        f"[fep]\nnode = test\ndata_dir = {workdir}\n"
        f"[store]\nurl = {store_url}\n"
        f"[spool]\nmax_delay = 0.02\nflush_timeout = 20\n"
        f"[collect]\nperiod = {period}\ntimeout = 3\nenabled = {'yes' if collect else 'no'}\n"
        f"[push]\niec62056_21 = tcp:{push_port}:interface=127.0.0.1\n"
        + (f"dlms = tcp:{dlms_push_port}:interface=127.0.0.1\n" if dlms_push_port else "")
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

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        twistd = Path(sys.executable).parent / "twistd"
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
