"""The control socket: JSON lines over a real UNIX socket, commands by name, errors as
answers, a stale socket of a dead daemon replaced."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from fep.errors import ChannelError, ProtocolError
from fep.operator.control import ControlServer, ask


class ControlSocketTests(unittest.TestCase):
    def setUp(self) -> None:
        # A UNIX socket path must stay short (108 bytes): not under the test's deep temp.
        directory = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = directory / "sub" / "control.sock"
        self.server = ControlServer(reactor, self.path)

    def start(self) -> None:
        self.server.startService()
        self.addCleanup(self.server.stopService)

    async def test_command_answers_with_its_result(self) -> None:
        self.server.add("sessions", lambda request: {"sessions": [{"id": 1, "modem": "imei=1"}]})
        self.start()
        answer = await ask(reactor, self.path, "sessions")
        self.assertEqual(answer, {"ok": True, "sessions": [{"id": 1, "modem": "imei=1"}]})

    async def test_socket_is_for_its_owner_only(self) -> None:
        self.start()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    async def test_deferred_results_and_errors(self) -> None:
        def later(request: dict[str, Any]) -> Deferred[dict[str, Any]]:
            d: Deferred[dict[str, Any]] = Deferred()
            reactor.callLater(0.01, d.callback, {"echo": request.get("value")})
            return d

        def broken(request: dict[str, Any]) -> None:
            raise ProtocolError("meter m1 said no")

        self.server.add("later", later)
        self.server.add("broken", broken)
        self.start()
        self.assertEqual((await ask(reactor, self.path, "later", value=7))["echo"], 7)
        with self.assertRaises(ChannelError) as caught:
            await ask(reactor, self.path, "broken")
        self.assertIn("meter m1 said no", str(caught.exception))
        with self.assertRaises(ChannelError) as unknown:
            await ask(reactor, self.path, "launch")
        self.assertIn("unknown command 'launch'", str(unknown.exception))

    async def test_a_wrong_request_is_told_from_a_failing_meter(self) -> None:
        """An unknown meter (ConfigError) or a refusal as not found or bad (CommandRefused
        404/400) comes back as RequestRefused (the command line's usage exit, 2); a meter that
        fails stays a ChannelError (exit 3)."""
        from fep.errors import ConfigError
        from fep.operator.commands import CommandRefused
        from fep.operator.control import RequestRefused

        def unknown(request: dict[str, Any]) -> None:
            raise ConfigError("no meter 'DCU9' in the meter list")

        def not_found(request: dict[str, Any]) -> None:
            raise CommandRefused("no concentrator 'X'", status=404)

        def forbidden(request: dict[str, Any]) -> None:
            raise CommandRefused("role viewer may not", status=403)

        for name, command in (("unknown", unknown), ("not-found", not_found),
                              ("forbidden", forbidden)):
            self.server.add(name, command)
        self.start()
        for name in ("unknown", "not-found"):
            with self.assertRaises(RequestRefused) as caught:
                await ask(reactor, self.path, name)
            self.assertNotIsInstance(caught.exception, ChannelError)
        with self.assertRaises(ChannelError):
            await ask(reactor, self.path, "forbidden")

    async def test_not_json_is_answered_not_fatal(self) -> None:
        self.start()
        lines: list[bytes] = []
        got: Deferred[None] = Deferred()

        class Raw(Protocol):
            def dataReceived(self, data: bytes) -> None:
                lines.append(data)
                if b"\n" in data and not got.called:
                    got.callback(None)

        protocol = await UNIXClientEndpoint(reactor, str(self.path)).connect(
            Factory.forProtocol(Raw)
        )
        protocol.transport.write(b"hello?\n")
        await got
        self.assertFalse(json.loads(b"".join(lines))["ok"])
        protocol.transport.loseConnection()
        self.assertTrue((await ask(reactor, self.path, "ping"))["pong"])

    async def test_junk_lines_get_one_answer_and_the_connection_ends(self) -> None:
        self.start()
        received: list[bytes] = []
        lost: Deferred[None] = Deferred()

        class Junk(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason: object = None) -> None:
                lost.callback(None)

        protocol = await UNIXClientEndpoint(reactor, str(self.path)).connect(
            Factory.forProtocol(Junk)
        )
        protocol.transport.write(b"junk\n" * 1000)
        await lost
        self.assertEqual(b"".join(received).count(b"\n"), 1)

    def test_request_nested_too_deep_is_answered_not_fatal(self) -> None:
        # Issue 14 (fuzzing): json.loads raises RecursionError, not ValueError, on deep arrays.
        from twisted.internet.testing import StringTransport

        protocol = ControlServer(reactor, self.path).protocol_factory().buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"[" * 50_000 + b"\n")
        answer = json.loads(transport.value())
        self.assertEqual(answer, {"ok": False, "error": "request nested too deep"})

    def test_too_long_a_path_is_a_config_error(self) -> None:
        from fep.errors import ConfigError

        with self.assertRaises(ConfigError) as caught:
            ControlServer(reactor, "/tmp/" + "d" * 120 + "/control.sock")
        self.assertEqual((caught.exception.section, caught.exception.key), ("control", "socket"))

    async def test_no_daemon_is_a_clear_error(self) -> None:
        with self.assertRaises(ChannelError) as caught:
            await ask(reactor, self.path, "sessions")
        self.assertIn("cannot reach the daemon's control socket", str(caught.exception))

    async def test_stale_socket_of_a_dead_daemon_is_replaced(self) -> None:
        import socket

        self.path.parent.mkdir(parents=True)
        leftover = socket.socket(socket.AF_UNIX)
        leftover.bind(str(self.path))
        leftover.close()
        # Twisted's lock file names the daemon's PID; this one has no process.
        os.symlink("999999999", str(self.path) + ".lock")
        self.start()
        self.assertTrue((await ask(reactor, self.path, "ping"))["pong"])


class DaemonControlSocketTests(unittest.TestCase):
    def config_text(self, data_dir: str, socket: str = "") -> str:
        return (f"[fep]\ndata_dir = {data_dir}\n[store]\nurl = sqlite:{data_dir}/fep.sqlite\n"
                f"[control]\nsocket = {socket}\n")

    def test_default_socket_under_a_deep_data_dir_is_left_out_not_fatal(self) -> None:
        from fep.config import parse_config
        from fep.service import FepService

        deep = str(Path(self.mktemp()).resolve() / ("d" * 90))
        service = FepService(parse_config(self.config_text(deep)), reactor)
        self.assertIsNone(service.control)
        self.assertIn("set [control] socket", service._control_problem or "")

    def test_configured_socket_too_long_is_a_config_error(self) -> None:
        from fep.config import parse_config
        from fep.errors import ConfigError
        from fep.service import FepService

        data_dir = str(Path(self.mktemp()).resolve())
        config = parse_config(self.config_text(data_dir, "/tmp/" + "s" * 120))
        with self.assertRaises(ConfigError):
            FepService(config, reactor)


class RequestRefusedExitTests(unittest.TestCase):
    def test_the_command_line_exits_with_its_usage_status(self) -> None:
        import argparse
        import contextlib
        import io

        from fep.cli import _exit_for
        from fep.cli.output import EXIT_METER, EXIT_USAGE
        from fep.operator.control import RequestRefused

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            usage = _exit_for(RequestRefused("the daemon refused 'concentrator-sync': no "
                                             "meter 'DCU9' in the meter list"),
                              argparse.Namespace())
            meter = _exit_for(ChannelError("meter m1: timed out"), argparse.Namespace())
        self.assertEqual((usage, meter), (EXIT_USAGE, EXIT_METER))
        self.assertIn("no meter 'DCU9'", err.getvalue())
