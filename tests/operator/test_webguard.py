"""The web server's guards, driven without sockets: request bodies capped while they arrive
(small before a valid token, larger after), JSON nesting bounded before parsing, failed
logins limited per source address (429), security headers on every answer."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from fep.model import Meter
from fep.operator.http import Api, ApiResource, site
from fep.operator.tokens import TokenFile
from fep.operator.webguard import (
    AuthFailures,
    JsonTooDeep,
    WebLimits,
    json_depth,
    loads_bounded,
)
from tests.operator.helpers import OPERATOR_TOKEN, TOKENS, VIEWER_TOKEN, make_context


def _nested(depth: int) -> bytes:
    return b'{"options": ' + b"[" * depth + b"]" * depth + b"}"


class JsonDepthTests(unittest.TestCase):
    def test_depth_counts_arrays_and_objects_but_not_brackets_in_strings(self) -> None:
        self.assertEqual(json_depth(b'{"a": [1, {"b": "[[[{{{\\"]]"}]}'), 3)
        self.assertEqual(json_depth(b"3"), 0)

    def test_400_levels_parse_and_401_are_refused_without_recursion(self) -> None:
        deep = loads_bounded(b"[" * 400 + b"]" * 400, 400)
        self.assertEqual(json.dumps(deep, separators=(",", ":")), "[" * 400 + "]" * 400)
        for depth in (401, 500, 100_000):
            with self.assertRaises(JsonTooDeep):
                loads_bounded(b"[" * depth + b"]" * depth, 400)
        with self.assertRaises(ValueError):
            loads_bounded(b"{not json", 400)


class AuthFailureTests(unittest.TestCase):
    def test_a_source_is_refused_after_its_failures_and_others_are_not(self) -> None:
        clock = Clock()
        failures = AuthFailures(clock.seconds, limit=3, window=60, block=300)
        self.assertFalse(failures.failed("10.0.0.1"))
        self.assertFalse(failures.failed("10.0.0.1"))
        self.assertTrue(failures.failed("10.0.0.1"))
        self.assertEqual(failures.blocked("10.0.0.1"), 300)
        self.assertEqual(failures.blocked("10.0.0.2"), 0)
        clock.advance(299)
        self.assertTrue(failures.blocked("10.0.0.1"))
        clock.advance(2)
        self.assertEqual(failures.blocked("10.0.0.1"), 0)

    def test_failures_spread_wider_than_the_window_never_block(self) -> None:
        clock = Clock()
        failures = AuthFailures(clock.seconds, limit=3, window=60, block=300)
        for _ in range(10):
            failures.failed("10.0.0.1")
            clock.advance(31)
        self.assertEqual(failures.blocked("10.0.0.1"), 0)

    def test_the_table_of_sources_is_bounded(self) -> None:
        failures = AuthFailures(Clock().seconds, limit=3, max_sources=100)
        for n in range(10_000):
            failures.failed(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        self.assertEqual(len(failures), 100)

    async def test_the_api_answers_429_to_a_source_that_failed_too_often(self) -> None:
        ctx = await make_context(self, [])
        clock = Clock()
        failures = AuthFailures(clock.seconds, limit=2, window=60, block=30)
        api = ApiResource(Api(ctx), TokenFile.parse(TOKENS), failures)

        def call(token: str | None, host: str = "10.0.0.9") -> DummyRequest:
            request = DummyRequest([b"v1", b"stats"])
            request.client = IPv4Address("TCP", host, 40000)
            if token is not None:
                request.requestHeaders.setRawHeaders(b"authorization",
                                                     [b"Bearer " + token.encode()])
            api.render(request)
            return request

        self.assertEqual(call("wrong-token-0123456789").responseCode, 401)
        self.assertEqual(call(None).responseCode, 401)
        # Blocked now: even the right token gets 429, so guessing learns nothing.
        refused = call(VIEWER_TOKEN)
        self.assertEqual(refused.responseCode, 429)
        self.assertEqual(refused.responseHeaders.getRawHeaders(b"retry-after"), [b"31"])
        self.assertIn(b"too many failed logins", b"".join(refused.written))
        self.assertNotEqual(call(VIEWER_TOKEN, host="10.0.0.10").responseCode, 429)
        clock.advance(31)
        self.assertNotEqual(call(VIEWER_TOKEN).responseCode, 429)


class BodyCapTests(unittest.TestCase):
    """Bytes fed to the site's HTTP channel as a client would send them."""

    async def channel(self) -> Any:
        ctx = await make_context(self, [Meter("m1", "iec62056-21", "tcp:host=127.0.0.1:port=1")])
        factory = site(ctx, TokenFile.parse(TOKENS),
                       limits=WebLimits(body_open=4096, body_authenticated=65536))
        self.rendered: list[bytes] = []
        api = factory.resource.children[b"api"]
        original = api.render

        def render(request: Any) -> Any:
            self.rendered.append(request.content.read())
            request.content.seek(0)
            return original(request)

        api.render = render
        channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        return channel, transport

    @staticmethod
    def head(length: int | None, token: str | None = None, extra: bytes = b"") -> bytes:
        lines = [b"POST /api/v1/meters/m1/commands HTTP/1.1", b"Host: fep"]
        if token:
            lines.append(b"Authorization: Bearer " + token.encode())
        if length is None:
            lines.append(b"Transfer-Encoding: chunked")
        else:
            lines.append(b"Content-Length: " + str(length).encode())
        return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"

    async def test_a_declared_length_over_the_open_cap_is_refused_before_the_body(self) -> None:
        channel, transport = await self.channel()
        channel.dataReceived(self.head(10_000_000, extra=b"Expect: 100-continue\r\n"))
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertNotIn(b"100 Continue", answer)
        self.assertIn(b"at most 4096 bytes", answer)
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(b"x" * 100_000)
        self.assertEqual(self.rendered, [])

    async def test_a_valid_token_earns_the_larger_cap_and_no_more(self) -> None:
        channel, transport = await self.channel()
        body = json.dumps({"action": "reconnect", "params": {"pad": "x" * 20_000}}).encode()
        channel.dataReceived(self.head(len(body), OPERATOR_TOKEN) + body)
        self.assertEqual(self.rendered, [body])
        self.assertFalse(transport.value().startswith(b"HTTP/1.1 413"))
        channel, transport = await self.channel()
        channel.dataReceived(self.head(70_000, OPERATOR_TOKEN))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(self.rendered, [])
        channel, transport = await self.channel()
        channel.dataReceived(self.head(5000, "wrong-token-0123456789"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))

    async def test_a_chunked_body_growing_past_the_cap_is_cut_off(self) -> None:
        channel, transport = await self.channel()
        channel.dataReceived(self.head(None))
        for _ in range(3):
            channel.dataReceived(b"800\r\n" + b"a" * 0x800 + b"\r\n")
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(b"800\r\n" + b"a" * 0x800 + b"\r\n0\r\n\r\n")
        self.assertEqual(self.rendered, [])

    async def test_a_small_body_without_a_token_is_read_and_answered_401(self) -> None:
        channel, transport = await self.channel()
        channel.dataReceived(self.head(2) + b"{}")
        self.assertEqual(self.rendered, [b"{}"])
        self.assertIn(b" 401 ", transport.value().split(b"\r\n")[0])


class HeaderTests(unittest.TestCase):
    async def answer(self, path: bytes, token: str | None = None) -> tuple[bytes, bytes]:
        ctx = await make_context(self, [])
        factory = site(ctx, TokenFile.parse(TOKENS))
        channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
        channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: fep\r\n" + auth + b"\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return head.lower(), body

    async def test_every_answer_carries_the_security_headers(self) -> None:
        for path in (b"/status", b"/static/status.js", b"/api/v1/stats", b"/nothing", b"/"):
            head, _ = await self.answer(path, VIEWER_TOKEN)
            for header in (b"content-security-policy: default-src 'none'; script-src 'self'",
                           b"x-frame-options: deny", b"x-content-type-options: nosniff",
                           b"referrer-policy: no-referrer"):
                self.assertIn(header, head, path)

    async def test_api_answers_are_never_stored(self) -> None:
        for path, token in ((b"/api/v1/stats", VIEWER_TOKEN), (b"/api/v1/stats", None),
                            (b"/api/v1/nothing", VIEWER_TOKEN)):
            head, _ = await self.answer(path, token)
            self.assertIn(b"cache-control: no-store", head, path)
        head, _ = await self.answer(b"/status")
        self.assertNotIn(b"no-store", head)
