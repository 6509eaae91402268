"""The DLMS connection as session steps (fep/protocols/dlms/exchange.py), and DlmsConnection
on the shared session driver: its step timer, error naming and hang-up are the driver's."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from fep.errors import ChannelError, SessionTimeout
from fep.protocols.actions import Fail, Send, SetTimer
from fep.protocols.dlms.client import ClientSettings, DlmsClient
from fep.protocols.dlms.exchange import DlmsSteps, Opened, Resent
from fep.protocols.dlms.link import HdlcLink, LinkKind, LinkSettings, WrapperLink
from fep.protocols.dlms.session import DlmsConnection


def client() -> DlmsClient:
    return DlmsClient(ClientSettings(meter="m1", route="tcp:meter-host:4059"))


class StepsTests(unittest.TestCase):
    def test_a_wrapper_link_is_open_at_once(self) -> None:
        self.assertEqual(DlmsSteps(client(), WrapperLink(LinkSettings())).start(), [Opened()])

    def test_a_silent_wrapper_step_fails_naming_what_was_awaited(self) -> None:
        c = client()
        steps = DlmsSteps(c, WrapperLink(LinkSettings()))
        steps.start()
        sent = steps.request(c.associate(), "AARQ")
        self.assertIsInstance(sent[0], Send)
        self.assertEqual(sent[-1], SetTimer())
        self.assertEqual(steps.waiting_for, "AARQ")
        (fail,) = steps.timeout()
        assert isinstance(fail, Fail)
        self.assertIsInstance(fail.error, SessionTimeout)
        self.assertEqual(fail.error.message, "no answer to AARQ")

    def test_a_silent_hdlc_step_is_repeated_then_fails(self) -> None:
        steps = DlmsSteps(client(), HdlcLink(LinkSettings(LinkKind.HDLC)), retries=2)
        opening = steps.start()
        self.assertIsInstance(opening[0], Send)
        self.assertEqual(steps.waiting_for, "SNRM")
        for n in (1, 2):
            again = steps.timeout()
            self.assertEqual(again[0], Resent("SNRM", n))
            self.assertIsInstance(again[1], Send)
            self.assertEqual(again[-1], SetTimer())
        (fail,) = steps.timeout()
        self.assertIsInstance(fail, Fail)


class ConnectionOnTheDriverTests(unittest.TestCase):
    def connection(self) -> tuple[DlmsConnection, Clock, StringTransport]:
        clock = Clock()
        connection = DlmsConnection(clock, client(), WrapperLink(LinkSettings()), timeout=5)
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, clock, transport

    def test_a_silent_meter_fails_the_request_with_the_drivers_timeout(self) -> None:
        connection, clock, transport = self.connection()
        self.assertTrue(connection.ready.called)
        answer = connection.request(connection.client.associate(), "AARQ")
        self.assertTrue(transport.value())
        clock.advance(5)
        error = self.failureResultOf(answer, SessionTimeout).value
        self.assertEqual(error.message, "no answer to AARQ within 5.0 s")
        self.assertEqual((error.meter, error.route, error.protocol),
                         ("m1", "tcp:meter-host:4059", "dlms"))
        self.assertTrue(connection.finished)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_lost_connection_fails_the_request_naming_the_route(self) -> None:
        connection, clock, _ = self.connection()
        answer = connection.request(connection.client.associate(), "AARQ")
        connection.connectionLost()
        error = self.failureResultOf(answer, ChannelError).value
        self.assertIn("waiting for AARQ", error.message)
        self.assertEqual(error.route, "tcp:meter-host:4059")
        self.assertTrue(connection.closed.called)
        self.assertEqual(clock.getDelayedCalls(), [])
