"""The junk-load benchmark of the listeners (`python -m fep.bench --only listeners`): the real
daemon (`twistd fep`) with every listener on (GPRS, DLMS push, IEC 62056-21 push, HTTP, SSH
console, control socket) takes, on each listener in turn, 2,000 junk connections, 50 junk
streams of 20 MB and 2,000 idle connections, while the daemon's RSS is sampled, a good DLMS
push is timed to the store and the API is asked, during and after each wave.

All traffic goes to 127.0.0.1 (junk from the loopback sources 127.0.0.2-4, good traffic from
127.0.0.1); every loop is bounded and stops by itself. Not a test: a measurement with a
verdict (RSS within 64 MB of the start, pushes stored within 1 s, the API answering).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

JUNK_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
GOOD_SOURCE = "127.0.0.1"
RSS_BUDGET = 64 * 1024 * 1024
PUSH_BUDGET = 1.0
NOFILE = 65536
TITLE = bytes.fromhex("4D4D4D0000BC614E")
EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
LISTENERS = ("gprs", "push_dlms", "push_iec62056_21", "http", "ssh", "control")


@attrs.frozen
class Waves:
    """How much junk each listener gets."""

    junk_connections: int = 2000
    streams: int = 50
    stream_bytes: int = 20 * 1024 * 1024
    idle_connections: int = 2000
    hold: float = 3.0


@attrs.define
class WaveResult:
    listener: str
    wave: str
    seconds: float = 0.0
    rss_start: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    push_worst: float = 0.0
    push_after: float = 0.0
    pushes_late: int = 0
    api_failures: int = 0
    refused: int = 0
    closed: int = 0
    sent_bytes: int = 0
    cpu: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.rss_peak - self.rss_start <= RSS_BUDGET
                and self.rss_end - self.rss_start <= RSS_BUDGET
                and self.push_worst <= PUSH_BUDGET and self.push_after <= PUSH_BUDGET
                and not self.pushes_late and not self.api_failures)


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process's open-file limit (inherited by the daemon) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class BenchDaemon:
    """`twistd -n fep` with every listener on loopback, in a scratch directory."""

    def __init__(self, workdir: Path, sockets: Path) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in LISTENERS if name != "control"}
        self.control = sockets / "control.sock"
        self.db = workdir / "fep.sqlite"
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self) -> Path:
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from twisted.conch.ssh.keys import Key

        tokens = self.workdir / "tokens"
        tokens.write_text(f"bench viewer {self.token}\n")
        tokens.chmod(0o600)
        key = Key(ed25519.Ed25519PrivateKey.generate())
        keys = self.workdir / "authorized_keys"
        keys.write_text(key.public().toString("OPENSSH").decode() + " bench\n")
        p = self.ports
        config = self.workdir / "fep.ini"
        config.write_text(
            f"[fep]\nnode = bench\ndata_dir = {self.workdir}\n"
            f"[store]\nurl = sqlite:{self.db}\n"
            "[collect]\nenabled = no\n"
            f"[push]\niec62056_21 = tcp:{p['push_iec62056_21']}:interface=127.0.0.1\n"
            f"dlms = tcp:{p['push_dlms']}:interface=127.0.0.1\n"
            f"[gprs]\nlisten = tcp:{p['gprs']}:interface=127.0.0.1\n"
            f"[control]\nsocket = {self.control}\n"
            f"[http]\nport = {p['http']}\ntokens_file = {tokens}\n"
            f"[manhole]\nport = {p['ssh']}\nauthorized_keys = {keys}\n"
            "[alarms]\nenabled = no\n"
            "[log]\nlevel = info\n"
        )
        self.add_meter(config)
        return config

    def add_meter(self, config: Path) -> None:
        """The meter whose pushes are timed, with the daemon's own command line and
        configuration (its keys go to the daemon's secret store, DATA_DIR/master.key)."""
        csv = self.workdir / "meters.csv"
        csv.write_text("id,protocol,route,dlms_server_system_title,dlms_ek,dlms_ak\n"
                       f"dlms-1,dlms,tcp:host=127.0.0.1:port=1,{TITLE.hex()},{EK.hex()},"
                       f"{AK.hex()}\n")
        subprocess.run([sys.executable, "-m", "fep.cli", "--config", str(config), "meters",
                        "import", str(csv)], env=_env(), check=True, capture_output=True)

    def start(self, config: Path) -> None:
        env = _env()
        twistd = Path(sys.executable).parent / "twistd"
        log = open(self.workdir / "twistd.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            [str(twistd), "--nodaemon", "--pidfile=", "--logfile=-", "fep", "--config",
             str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(self.workdir), env=env,
            preexec_fn=raise_nofile,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def readings(self) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])


def _env() -> dict[str, str]:
    """The daemon's environment: this checkout first on the path, or FEP_BENCH_DAEMON_ROOT's
    (another checkout of fep, to measure a daemon without the limits side by side)."""
    env = dict(os.environ)
    root = Path(os.environ.get("FEP_BENCH_DAEMON_ROOT") or Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class GoodMeter:
    """Ciphered Data-Notifications of the one known meter, each timed until it is stored.

    Runs in a process of its own (``Probe``), so that the junk the bench sends cannot delay
    the measurement: what it times is the daemon."""

    def __init__(self, daemon: BenchDaemon) -> None:
        from fep.protocols.dlms.security import SecurityKeys
        from fep.protocols.dlms.server import DlmsServer, ServerSettings
        from fep.sim.dlms_meter import SimulatedDlmsMeter

        self.daemon = daemon
        self.meter = SimulatedDlmsMeter(serial="BENCH001", system_title=TITLE)
        self.server = DlmsServer(self.meter, ServerSettings(system_title=TITLE,
                                                            keys=SecurityKeys(EK, AK)))

    def frame(self) -> bytes:
        from fep.protocols.dlms import wrapper

        return wrapper.encode_wrapper(
            wrapper.WrapperFrame(1, 1, self.server.push(self.meter.push_body())))

    def push(self, limit: float = 5.0) -> float:
        """Seconds from sending one push to its readings in the store (``limit`` when it
        never came)."""
        frame = self.frame()
        before = self.daemon.readings()
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.daemon.ports["push_dlms"]),
                                          timeout=limit, source_address=(GOOD_SOURCE, 0)) as s:
                s.sendall(frame)
                while time.monotonic() - started < limit:
                    if self.daemon.readings() > before:
                        return time.monotonic() - started
                    time.sleep(0.005)
        except OSError:
            pass
        return limit


class Probe:
    """A child process that times good pushes and asks the API when told to."""

    def __init__(self, daemon: BenchDaemon) -> None:
        import multiprocessing

        self._conn, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("fork")
        self.process = context.Process(target=self._serve, args=(daemon, child), daemon=True)
        self.process.start()

    @staticmethod
    def _serve(daemon: BenchDaemon, conn: Any) -> None:
        good = GoodMeter(daemon)
        while True:
            what = conn.recv()
            if what == "push":
                conn.send(good.push())
            elif what == "api":
                conn.send(api_answers(daemon))
            else:
                return

    def _ask(self, what: str) -> Any:
        self._conn.send(what)
        return self._conn.recv()

    async def push(self) -> float:
        return float(await asyncio.to_thread(self._ask, "push"))

    async def api(self) -> bool:
        return bool(await asyncio.to_thread(self._ask, "api"))

    def close(self) -> None:
        self._conn.send("stop")
        self.process.join(10)


def api_answers(daemon: BenchDaemon) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.ports['http']}/api/v1/stats",
        headers={"Authorization": f"Bearer {daemon.token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def control_stats(daemon: BenchDaemon) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(daemon.control))
            s.sendall(b'{"command": "listeners"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        return dict(answer.get("listeners", {}))
    except (OSError, ValueError):
        return {}


async def _open(daemon: BenchDaemon, listener: str, source: str,
                limit: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if listener == "control":
        return await asyncio.wait_for(asyncio.open_unix_connection(str(daemon.control)), limit)
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", daemon.ports[listener], local_addr=(source, 0)), limit)


async def _bounded(count: int, parallel: int, one: Callable[[int], Awaitable[int]]) -> int:
    """Run ``one(i)`` for i < count, at most ``parallel`` at once; the sum of what they
    return."""
    gate = asyncio.Semaphore(parallel)
    total = 0

    async def run(i: int) -> None:
        nonlocal total
        async with gate:
            try:
                total += await one(i)
            except (TimeoutError, OSError, EOFError):
                pass

    await asyncio.gather(*(run(i) for i in range(count)))
    return total


JUNK = os.urandom(1 << 20)


async def junk_connections(daemon: BenchDaemon, listener: str, waves: Waves) -> int:
    """Connections that each send a little junk and go."""

    async def one(i: int) -> int:
        _, writer = await _open(daemon, listener, JUNK_SOURCES[i % len(JUNK_SOURCES)])
        start = (i * 7919) % (len(JUNK) - 1024)
        size = 64 + i % 960
        try:
            writer.write(JUNK[start:start + size])
            await asyncio.wait_for(writer.drain(), 5)
        finally:
            writer.close()
        return size

    return await _bounded(waves.junk_connections, 100, one)


async def junk_streams(daemon: BenchDaemon, listener: str, waves: Waves) -> int:
    """Connections that each try to send ``stream_bytes`` of junk, until the daemon closes
    them; the bytes they got to send."""

    async def one(i: int) -> int:
        _, writer = await _open(daemon, listener, JUNK_SOURCES[i % len(JUNK_SOURCES)])
        sent = 0
        deadline = time.monotonic() + 60
        try:
            while sent < waves.stream_bytes and time.monotonic() < deadline:
                chunk = JUNK[: min(len(JUNK), waves.stream_bytes - sent)]
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10)
                sent += len(chunk)
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
        return sent

    return await _bounded(waves.streams, waves.streams, one)


async def idle_connections(daemon: BenchDaemon, listener: str, waves: Waves) -> int:
    """Connections that send nothing, held ``hold`` seconds; how many the daemon kept."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []

    async def one(i: int) -> int:
        reader, writer = await _open(daemon, listener, JUNK_SOURCES[i % len(JUNK_SOURCES)])
        writers.append(writer)
        readers.append(reader)
        return 0

    await _bounded(waves.idle_connections, 200, one)
    await asyncio.sleep(waves.hold)
    kept = sum(1 for r in readers if not r.at_eof())
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)
    return kept


WAVES: dict[str, Callable[[BenchDaemon, str, Waves], Awaitable[int]]] = {
    "junk connections": junk_connections,
    "junk streams": junk_streams,
    "idle connections": idle_connections,
}


def label(wave: str, waves: Waves) -> str:
    if wave == "junk connections":
        return f"{waves.junk_connections:,} junk connections"
    if wave == "junk streams":
        return f"{waves.streams} x {waves.stream_bytes >> 20} MB junk streams"
    return f"{waves.idle_connections:,} idle connections, {waves.hold:.1f} s"


async def measure(daemon: BenchDaemon, good: Probe, listener: str, wave: str,
                  waves: Waves) -> WaveResult:
    result = WaveResult(listener, label(wave, waves))
    result.rss_start = result.rss_peak = rss(daemon.pid)
    before = control_stats(daemon).get(_stats_name(daemon, listener), {})
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            result.rss_peak = max(result.rss_peak, rss(daemon.pid))
            await asyncio.sleep(0.05)

    async def probe() -> None:
        while not done.is_set():
            latency = await good.push()
            result.push_worst = max(result.push_worst, latency)
            if latency > PUSH_BUDGET:
                result.pushes_late += 1
            if not await good.api():
                result.api_failures += 1
            await asyncio.sleep(0.2)

    started = time.monotonic()
    cpu = cpu_seconds(daemon.pid)
    tasks = [asyncio.ensure_future(sample()), asyncio.ensure_future(probe())]
    try:
        result.sent_bytes = await WAVES[wave](daemon, listener, waves)
    finally:
        result.seconds = time.monotonic() - started
        done.set()
        await asyncio.gather(*tasks)
    result.push_after = await good.push()
    if not await good.api():
        result.api_failures += 1
    after = control_stats(daemon).get(_stats_name(daemon, listener), {})
    result.refused = sum(after.get(k, 0) - before.get(k, 0)
                         for k in ("refused_connections", "refused_source"))
    result.closed = sum(after.get(k, 0) - before.get(k, 0)
                        for k in ("overflow_closed", "idle_closed"))
    result.rss_end = rss(daemon.pid)
    result.cpu = cpu_seconds(daemon.pid) - cpu
    result.rss_peak = max(result.rss_peak, result.rss_end)
    return result


def _stats_name(daemon: BenchDaemon, listener: str) -> str:
    """The listener's name in the daemon's counts (a GPRS listener's names its endpoint)."""
    return f"gprs tcp:{daemon.ports['gprs']}" if listener == "gprs" else listener


async def wait_ready(daemon: BenchDaemon, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert daemon.process is not None
        if daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited; see {daemon.workdir / 'twistd.log'}")
        if await asyncio.to_thread(api_answers, daemon) and daemon.control.exists():
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the daemon did not start listening in time")


async def run(waves: Waves, listeners: tuple[str, ...] = LISTENERS,
              report: Callable[[WaveResult], None] = lambda r: None) -> tuple[
                  list[WaveResult], int, int]:
    """Every wave against every listener; the results, the daemon's RSS at start and end."""
    workdir = Path(tempfile.mkdtemp(prefix="fep-bench-listeners-"))
    sockets = Path(tempfile.mkdtemp(prefix="fep-bl-", dir="/tmp"))
    daemon = BenchDaemon(workdir, sockets)
    results: list[WaveResult] = []
    good: Probe | None = None
    try:
        daemon.start(daemon.configure())
        await wait_ready(daemon)
        good = Probe(daemon)
        await good.push()  # the first push warms the caches: not measured
        await asyncio.sleep(1.0)
        first = rss(daemon.pid)
        for listener in listeners:
            for wave in WAVES:
                results.append(await measure(daemon, good, listener, wave, waves))
                report(results[-1])
        await asyncio.sleep(1.0)
        last = rss(daemon.pid)
        # Every slot given back: no listener still counts a connection of the waves.
        still = {name: counts["open"] for name, counts in control_stats(daemon).items()
                 if counts["open"] and name != "control"}
        if still:
            raise RuntimeError(f"connections still counted open after the waves: {still}")
        return results, first, last
    finally:
        if good is not None:
            good.close()
        daemon.stop()
        shutil.rmtree(sockets, ignore_errors=True)
        if os.environ.get("FEP_BENCH_KEEP"):
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def mb(n: int) -> str:
    return f"{n / 1048576:.1f}"


def table(results: list[WaveResult]) -> str:
    rows = ["| listener | wave | s (daemon CPU s) | RSS start / peak / end MB | worst push "
            "during / after s | API failures | refused | closed by limits | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r.listener} | {r.wave} | {r.seconds:.1f} ({r.cpu:.1f}) | {mb(r.rss_start)} / "
            f"{mb(r.rss_peak)} / {mb(r.rss_end)} | {r.push_worst:.2f} / {r.push_after:.2f} "
            f"| {r.api_failures} | {r.refused} | {r.closed} | {'ok' if r.ok else 'FAIL'} |")
    return "\n".join(rows)


def main(waves: Waves | None = None, listeners: tuple[str, ...] = LISTENERS) -> tuple[str, bool]:
    """Run the benchmark; the markdown table and whether every wave met its budget."""
    nofile = raise_nofile()
    load = os.getloadavg()[0]
    results, first, last = asyncio.run(run(waves or Waves(), listeners, report=lambda r: print(
        f"{r.listener:17} {r.wave:34} RSS {mb(r.rss_start)}/{mb(r.rss_peak)}/{mb(r.rss_end)} MB"
        f" cpu {r.cpu:.1f} s push {r.push_worst:.2f}/{r.push_after:.2f} s"
        f" api-fail {r.api_failures} refused {r.refused} closed {r.closed}", flush=True)))
    rss_met = max(r.rss_peak for r in results) - first <= RSS_BUDGET and \
        last - first <= RSS_BUDGET
    waves_met = sum(1 for r in results if r.ok)
    overall = rss_met and waves_met == len(results)
    peak = max(r.rss_peak for r in results)
    text = table(results) + (
        f"\n\nDaemon RSS at the start {mb(first)} MB, highest {mb(peak)}"
        f" MB, at the end {mb(last)} MB (budget: start + 64 MB): "
        f"{'met' if rss_met else 'NOT met'}. Waves within every budget (RSS, pushes stored "
        f"within 1 s during and after, API answering): {waves_met} of {len(results)}. "
        f"Open-file limit {nofile}; load average "
        f"{load:.1f} at the start (the machine is shared).")
    return text, overall
