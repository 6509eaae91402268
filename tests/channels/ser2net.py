"""Debian's ser2net (4.x, YAML configuration) as a test peer: a serial server on loopback
whose serial side is one end of a socat pty pair, the other end served by our simulated
meters."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.daemon.harness import free_port
from tests.system import require_program

reactor: Any = global_reactor


def ser2net_config(device: str, raw_port: int, telnet_port: int, line: str = "300e71") -> str:
    """Two accepters on one device: raw TCP and telnet with RFC 2217 (ser2net.yaml(5)).
    ``local`` keeps ser2net away from modem control lines, which ptys do not have;
    ``kickolduser`` lets a new session in while ser2net still winds up the last one (a
    head end is the port's only user)."""
    options = "    options:\n      kickolduser: true\n"
    return (
        "%YAML 1.1\n---\n"
        "connection: &raw\n"
        f"    accepter: tcp,127.0.0.1,{raw_port}\n"
        f"    connector: serialdev,{device},{line},local\n"
        + options
        + "connection: &rfc2217\n"
        f"    accepter: telnet(rfc2217),tcp,127.0.0.1,{telnet_port}\n"
        f"    connector: serialdev,{device},{line},local\n"
        + options
    )


@inlineCallbacks
def start_ser2net(case: unittest.TestCase, device: str, line: str = "300e71") -> Any:
    """Run ser2net in the foreground serving ``device``; fires with (raw port, RFC 2217
    port) once both accept connections. Ended (by its pid) when the test is done."""
    ser2net = require_program("ser2net", package="ser2net")
    workdir = Path(case.mktemp()).resolve()
    workdir.mkdir(parents=True)
    raw_port, telnet_port = free_port(), free_port()
    config = workdir / "ser2net.yaml"
    config.write_text(ser2net_config(device, raw_port, telnet_port, line))
    log = open(workdir / "ser2net.log", "wb")  # noqa: SIM115 (closed in stop)
    # -n: foreground; -u: no UUCP lock files; -c: our configuration only.
    proc = subprocess.Popen(
        [ser2net, "-n", "-u", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        log.close()

    case.addCleanup(stop)
    for port in (raw_port, telnet_port):
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(f"ser2net exited: {(workdir / 'ser2net.log').read_text()}")
            try:
                probe = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                    Factory.forProtocol(Protocol)
                )
            except ConnectError:
                yield deferLater(reactor, 0.025, lambda: None)
                continue
            probe.transport.abortConnection()
            break
        else:
            raise AssertionError(f"ser2net did not listen on {port} within 5 s")
    # ser2net frees a port's device a moment after the probe's connection ends.
    yield deferLater(reactor, 0.1, lambda: None)
    return (raw_port, telnet_port)
