"""The daemon's HTTP API under attack, end to end (`twistd -n fep` as a child): a read asked
with a file path as its device map is refused naming the option, oversized bodies are
refused while they arrive (before a token and after), the API still answers and still reads
meters, and an address that keeps failing to log in gets 429."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from tests.daemon.harness import ROOT, Daemon, add_meters, free_port, wait_for, write_config
from tests.operator.helpers import OPERATOR_TOKEN, VIEWER_TOKEN, http, write_tokens


class _RawClient(Protocol):
    """Sends bytes as they are and keeps whatever comes back until the server closes."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        for chunk in self.chunks:
            self.transport.write(chunk)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(self.received)


async def raw_http(port: int, *chunks: bytes) -> bytes:
    client = _RawClient(*chunks)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return await client.closed


def post_head(path: str, token: str | None, length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: fep", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class DaemonApiHardeningTests(unittest.TestCase):
    timeout = 120

    async def test_file_path_options_and_oversized_bodies_are_refused_and_the_api_answers(
        self,
    ) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        write_tokens(workdir / "tokens")
        sims = make_meters(1)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        await add_meters(f"sqlite:{db}", [
            Meter("iec-1", "iec62056-21",
                  f"tcp:host=127.0.0.1:port={sim_port.getHost().port}",
                  address=sims[0].address),
            Meter("pr-1", "modbus", f"tcp:host=127.0.0.1:port={free_port()}",
                  metadata={"modbus_device_map": "sim-pr2"}),
        ])
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, collect=False,
            extra=(f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                   "body_limit = 65536\nauth_failures = 5\nauth_block = 600\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        base = f"http://127.0.0.1:{http_port}"

        async def up() -> bool:
            try:
                return (await http(f"{base}/api/v1/stats", token=VIEWER_TOKEN)).status == 200
            except Exception:
                return False

        await wait_for(up, 60, "the daemon's API")

        # A device map given as a file path: refused before any file is opened, even a
        # valid map's file outside etc/devices.
        copied = workdir / "copied-map.ini"
        copied.write_bytes((ROOT / "etc" / "devices" / "sim-pr2.ini").read_bytes())
        for value in (str(copied), "/etc/passwd", "../../../etc/passwd", "sim-pr2.ini"):
            r = await http(f"{base}/api/v1/meters/pr-1/read", method=b"POST",
                           token=OPERATOR_TOKEN,
                           body=json.dumps({"options": {"modbus_device_map": value}}).encode())
            self.assertEqual(r.status, 400, r.body)
            self.assertIn("modbus_device_map", r.json()["error"])
        r = await http(f"{base}/api/v1/meters/iec-1/read", method=b"POST", token=OPERATOR_TOKEN,
                       body=b'{"options": {"iec_baud_char": "0"}}')
        self.assertEqual(r.status, 400)
        self.assertIn("iec_baud_char", r.json()["error"])

        # Oversized bodies: a declared 10 MB without a token, then 100 KB with one (the cap
        # after a token is 64 KiB here): 413 before any of the body is sent; then a chunked
        # body growing past the cap: 413 and the connection closed.
        answer = await raw_http(http_port, post_head("/api/v1/meters/iec-1/read", None,
                                                     10_000_000))
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        answer = await raw_http(http_port, post_head("/api/v1/meters/iec-1/read",
                                                     OPERATOR_TOKEN, 100_000))
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
        answer = await raw_http(http_port, post_head("/api/v1/meters/iec-1/read",
                                                     OPERATOR_TOKEN, None), chunk * 5)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])

        # The API still answers, with its headers, and still reads a meter.
        r = await http(f"{base}/api/v1/stats", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        self.assertEqual(r.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        r = await http(f"{base}/api/v1/meters/iec-1/read", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json()["readings"])

        # Five failed logins and this address is refused, even with a good token.
        statuses: list[Any] = []
        for _ in range(6):
            statuses.append((await http(f"{base}/api/v1/meters",
                                        token="guess-0123456789abcdef")).status)
        self.assertEqual(statuses, [401] * 5 + [429])
        self.assertEqual((await http(f"{base}/api/v1/stats", token=VIEWER_TOKEN)).status, 429)
        self.assertEqual(await daemon.interrupt(), 0)
