"""The simulated GPRS modem as a program (`python -m fep.sim.gprs_modem`): it dials in to a
GPRS listener, registers and pushes; it stops when fep closes its session."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest
from zope.interface import implementer

from fep.channels.gprs import GprsChannel, GprsSettings
from fep.directory import MeterDirectory
from fep.interfaces import IRecordSink
from fep.model import Meter, Record
from fep.protocols.dlms.security import InvocationCounterGuard
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from tests.processes import ROOT, child_env

IMEI = "356938035643809"


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.records.extend(records)
        return succeed(None)


class ModemProgramTests(unittest.TestCase):
    timeout = 60

    async def test_dials_in_registers_pushes_and_ends_with_its_session(self) -> None:
        directory = MeterDirectory(None)  # type: ignore[arg-type]
        directory.replace([Meter("m1", "dlms", f"gprs:imei={IMEI}", metadata={
            "dlms_server_system_title": "4645505349000001",
            "dlms_ek": EXAMPLE_EK.hex(), "dlms_ak": EXAMPLE_AK.hex()})])
        sink = Sink()
        channel = GprsChannel(reactor, GprsSettings(), sink=sink, directory=directory,
                              counters=InvocationCounterGuard())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            channel.factory("tcp"))
        self.addCleanup(port.stopListening)
        finished = getProcessOutputAndValue(
            sys.executable,
            ["-m", "fep.sim.gprs_modem", "--connect",
             f"tcp:host=127.0.0.1:port={port.getHost().port}", "--imei", IMEI,
             "--every", "0.1", "--count", "3", "--garbage", "AT\r\nOK\r\n"],
            env=child_env(), path=str(ROOT),
        )
        deadline = time.monotonic() + 30
        while len(sink.records) < 15 and time.monotonic() < deadline:
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(sink.records), 15)  # three pushes of five registers
        (info,) = channel.sessions()
        self.assertEqual((info.modem, info.meters, info.garbage), (f"imei={IMEI}", ("m1",), 8))
        channel.close_all()
        out, err, code = await finished
        self.assertEqual(code, 0, err)
        self.assertIn(f"modem {IMEI} (dlms) connected", out.decode())
