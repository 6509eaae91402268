"""The one command vocabulary: each protocol declares what it runs, and a command a meter's
protocol or device does not have is refused when it is asked, naming meter, protocol and
command (docs/control.md)."""

from __future__ import annotations

from twisted.trial import unittest

from fep.collect.commands import CommandNotSupported, check_supported, meter_commands
from fep.collect.tasks import COMMANDS
from fep.model import Meter
from fep.protocols.registry import protocol_commands, protocol_names


class VocabularyTests(unittest.TestCase):
    def test_every_protocol_declares_commands_of_the_vocabulary(self) -> None:
        for name in protocol_names():
            self.assertLessEqual(protocol_commands(name), set(COMMANDS), name)

    def test_dlms_runs_the_relay_commands_and_the_clock_ones(self) -> None:
        supported = protocol_commands("dlms")
        self.assertLessEqual({"disconnect", "reconnect", "time-set", "time-sync"}, supported)

    def test_unsupported_command_is_refused_naming_meter_protocol_and_command(self) -> None:
        meter = Meter("iec-1", "iec62056-21", "tcp:host=127.0.0.1:port=1")
        with self.assertRaises(CommandNotSupported) as caught:
            check_supported(meter, "firmware-upgrade")
        text = str(caught.exception)
        self.assertIn("meter iec-1", text)
        self.assertIn("firmware-upgrade", text)
        self.assertIn("protocol iec62056-21 does not support it", text)

    def test_meter_metadata_narrows_to_what_the_device_has(self) -> None:
        meter = Meter("d1", "dlms", "tcp:host=127.0.0.1:port=1",
                      metadata={"commands": "demand-reset, time-set"})
        self.assertEqual(meter_commands(meter), {"demand-reset", "time-set"})
        check_supported(meter, "demand-reset")
        with self.assertRaises(CommandNotSupported) as caught:
            check_supported(meter, "disconnect")
        self.assertIn("its device does not have it", str(caught.exception))
