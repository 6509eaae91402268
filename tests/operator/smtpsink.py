"""A local SMTP sink for tests: aiosmtpd (a third-party SMTP server, test-only) on a free
loopback port in its own thread, keeping every message it is given."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial import unittest


class _Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.handler = _Handler()
        from tests.daemon.harness import free_port

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.handler.messages

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @classmethod
    async def start(cls, case: unittest.TestCase) -> SmtpSink:
        sink = cls()
        # Controller.start waits for its thread's event loop: not on the reactor thread.
        await deferToThread(sink.controller.start)
        case.addCleanup(deferToThread, sink.controller.stop)
        return sink
