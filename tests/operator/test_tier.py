"""The operator tier as a part of the service tree: its listeners on endpoint strings (with
``port``/``interface`` still working), and the console's and the API's reads building their
protocols through the context's registry (the daemon's DLMS context), not a module global."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from fep.config import parse_config
from fep.model import Meter, Reading
from fep.operator import commands
from fep.operator.settings import HttpSection, ManholeSection
from tests.operator.helpers import make_context

MINIMAL = "[fep]\ndata_dir = /tmp/fep-tier\n[store]\nurl = sqlite:/tmp/fep-tier/fep.sqlite\n"


class EndpointTests(unittest.TestCase):
    def test_listen_is_an_endpoint_string(self) -> None:
        config = parse_config(MINIMAL + "[http]\nlisten = tcp:8080:interface=127.0.0.1\n"
                              "[manhole]\nlisten = tcp:2222:interface=::1\n")
        self.assertEqual(config.http.endpoint(), "tcp:8080:interface=127.0.0.1")
        self.assertEqual(config.manhole.endpoint(), "tcp:2222:interface=::1")

    def test_port_and_interface_still_work(self) -> None:
        config = parse_config(MINIMAL + "[http]\nport = 8080\ninterface = 0.0.0.0\n"
                              "[manhole]\nport = 2222\ninterface = ::1\n")
        self.assertEqual(config.http.endpoint(), "tcp:8080:interface=0.0.0.0")
        self.assertEqual(config.manhole.endpoint(), r"tcp:2222:interface=\:\:1")

    def test_off_by_default(self) -> None:
        config = parse_config(MINIMAL)
        self.assertEqual((config.http.endpoint(), config.manhole.endpoint()), ("", ""))
        self.assertEqual(HttpSection(0, "127.0.0.1", "", True).endpoint(), "")
        self.assertEqual(ManholeSection(0, "127.0.0.1", "", "").endpoint(), "")


@attrs.frozen
class FakeProtocol:
    name: str
    records: list[Any]

    def read(self, reactor: Any, endpoint: Any, meter: Meter,
             timeout: float) -> Deferred[list[Any]]:
        return succeed(self.records)


class ReadThroughRegistryTests(unittest.TestCase):
    async def test_read_builds_its_protocol_with_the_context_s_registry(self) -> None:
        ctx = await make_context(self, [Meter("d1", "dlms", "tcp:host=127.0.0.1:port=1")])
        asked: list[str] = []
        from datetime import UTC, datetime

        from fep.model import ObisCode

        reading = Reading("d1", ObisCode(1, 0, 1, 8, 0, 255), 1.0,
                          meter_time=datetime(2026, 1, 1, tzinfo=UTC))

        def protocol_for(name: str) -> Any:
            asked.append(name)
            return FakeProtocol(name, [reading])

        ctx.protocol_for = protocol_for
        records = await commands.read_meter(ctx, "d1", who="api:alice", role="operator")
        self.assertEqual(asked, ["dlms"])
        self.assertEqual(records, [reading])

    def test_no_module_global_holds_a_dlms_context(self) -> None:
        from fep.protocols.dlms import context as dlms_context
        from fep.protocols.dlms import session
        from fep.protocols.registry import ProtocolRegistry, meter_protocol

        for module in (session, dlms_context):
            for name in ("set_dlms_context", "set_counter_store", "_default_context"):
                self.assertFalse(hasattr(module, name), name)
        context = dlms_context.DlmsContext(None)
        registry = ProtocolRegistry({"dlms": context})
        self.assertIs(registry.protocol_for("dlms").context, context)  # type: ignore[attr-defined]
        # A protocol built without one has none, whatever a daemon in the process uses.
        self.assertIsNone(meter_protocol("dlms").context)  # type: ignore[attr-defined]
        self.assertIsNone(session.DlmsProtocol().context)
