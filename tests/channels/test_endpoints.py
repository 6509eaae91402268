"""Route strings to endpoints: fep's own prefixes (``serial:``, ``rfc2217:``) resolve without
Twisted's plugin discovery, which a PEP 660 editable install (``pip install -e .``) does not
feed; other endpoint strings still go through ``clientFromString``."""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints as twisted_endpoints
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.channels.endpoints import client_endpoint, endpoint_arguments
from fep.channels.serialport import SerialEndpoint
from fep.channels.serialserver import Rfc2217Endpoint
from fep.errors import RouteError


def no_plugins(*args: Any, **kwargs: Any) -> list[Any]:
    return []


class WithoutPluginDiscoveryTests(unittest.TestCase):
    def setUp(self) -> None:
        # Twisted's plugin cache is unavailable, as in an editable install.
        self.patch(twisted_endpoints, "getPlugins", no_plugins)
        self.reactor = MemoryReactorClock()

    def test_twisted_alone_cannot_resolve_them_then(self) -> None:
        # What fep would depend on if it left these prefixes to clientFromString.
        self.assertRaises(ValueError, twisted_endpoints.clientFromString, self.reactor,
                          "serial:/dev/ttyUSB0")

    def test_serial_route_resolves(self) -> None:
        endpoint = client_endpoint(
            self.reactor, "serial:/dev/ttyUSB0:baudrate=9600:bytesize=8:parity=N")
        assert isinstance(endpoint, SerialEndpoint)
        s = endpoint.settings
        self.assertEqual((s.device, s.baudrate, s.bytesize, s.parity), ("/dev/ttyUSB0", 9600,
                                                                        8, "N"))

    def test_serial_route_keeps_its_defaults(self) -> None:
        endpoint = client_endpoint(self.reactor, "serial:/dev/ttyS1")
        assert isinstance(endpoint, SerialEndpoint)
        s = endpoint.settings
        self.assertEqual((s.device, s.baudrate, s.bytesize, s.parity), ("/dev/ttyS1", 300, 7,
                                                                        "E"))

    def test_rfc2217_route_resolves(self) -> None:
        endpoint = client_endpoint(
            self.reactor, "rfc2217:host=10.0.0.5:port=4001:baudrate=2400:parity=E")
        assert isinstance(endpoint, Rfc2217Endpoint)
        s = endpoint.settings
        self.assertEqual((s.host, s.port, s.baudrate, s.parity), ("10.0.0.5", 4001, 2400, "E"))

    def test_prefixes_are_case_insensitive_like_twisteds(self) -> None:
        self.assertIsInstance(client_endpoint(self.reactor, "SERIAL:/dev/ttyS1"),
                              SerialEndpoint)

    def test_bad_arguments_are_a_route_error_naming_the_route(self) -> None:
        with self.assertRaises(RouteError) as cm:
            client_endpoint(self.reactor, "serial:/dev/ttyS0:parity=Q")
        self.assertEqual(cm.exception.route, "serial:/dev/ttyS0:parity=Q")

    def test_tcp_routes_still_go_through_twisted(self) -> None:
        endpoint = client_endpoint(self.reactor, "tcp:host=127.0.0.1:port=4059")
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)


class ArgumentTests(unittest.TestCase):
    def test_positional_and_keyword(self) -> None:
        self.assertEqual(endpoint_arguments("serial:/dev/ttyS0:9600:parity=E"),
                         (["serial", "/dev/ttyS0", "9600"], {"parity": "E"}))

    def test_backslash_escapes_a_colon_and_an_equals_sign(self) -> None:
        self.assertEqual(endpoint_arguments(r"serial:/dev/serial/by-id/usb\:0:a\=b=c=d"),
                         (["serial", "/dev/serial/by-id/usb:0"], {"a=b": "c=d"}))

    def test_same_reading_as_twisted(self) -> None:
        for text in ("tcp:host=h:port=1", r"unix:path=/run/x\:y", "a:b:d=1:c", "x:=v:k="):
            args, kwargs = twisted_endpoints._parse(text)
            self.assertEqual(endpoint_arguments(text), (args, kwargs), text)
