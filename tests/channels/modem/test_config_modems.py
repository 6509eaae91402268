"""The [modems] section: lines, models, init strings, dialling and retry settings, and the
pool built from it."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.channels.modem.pool import pool_from_config
from fep.config import default_config, parse_config
from fep.errors import ConfigError

BASE = "[fep]\n[store]\n"


class ModemsConfigTests(unittest.TestCase):
    def test_no_lines_no_pool(self) -> None:
        config = default_config()
        self.assertEqual(config.modems.line_list(), [])
        self.assertIsNone(pool_from_config(MemoryReactorClock(), config.modems))

    def test_lines_models_and_settings(self) -> None:
        config = parse_config(BASE + """[modems]
lines =
    m1 serial:/dev/ttyS0:9600:8N1
    m2 serial:/dev/ttyUSB0:19200:8N1 usrobotics
model = gsm-csd
init = ATZ | ATE0V1 | AT+CBST=7,0,1
prefix = 0,
dialing = pulse
guard = 0.5
hangup = dtr
busy_delay = 5
retries = 0
""")
        section = config.modems
        self.assertEqual(section.line_list(), [
            ("m1", "serial:/dev/ttyS0:9600:8N1", "gsm-csd"),
            ("m2", "serial:/dev/ttyUSB0:19200:8N1", "usrobotics"),
        ])
        self.assertEqual(section.init_commands, ("ATZ", "ATE0V1", "AT+CBST=7,0,1"))
        pool = pool_from_config(MemoryReactorClock(), section)
        assert pool is not None
        self.assertEqual([line.name for line in pool.lines], ["m1", "m2"])
        self.assertEqual(pool.lines[1].spec.profile().init, ("ATZ", "ATE0V1", "AT+CBST=7,0,1"))
        self.assertEqual(pool.dial.command("5551001"), "ATDP0,5551001")
        self.assertEqual((pool.dial.guard, pool.dial.hangup), (0.5, "dtr"))
        self.assertEqual((pool.policy.busy_delay, pool.policy.retries), (5.0, 0))

    def test_bad_values_name_section_and_key(self) -> None:
        for text, key in [
            ("lines = m1 /dev/ttyS0", "lines"),
            ("lines = m1 serial:/dev/ttyS0 nokia", "lines"),
            ("lines = m1 serial:/a, m1 serial:/b", "lines"),
            ("model = nokia", "model"),
            ("dialing = rotary", "dialing"),
            ("hangup = drop", "hangup"),
            ("busy_retries = -1", "busy_retries"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(BASE + "[modems]\n" + text + "\n", "fep.ini")
            error = caught.exception
            self.assertEqual((error.file, error.section, error.key), ("fep.ini", "modems", key))

    def test_bad_prefix_or_init_fails_when_the_pool_is_built(self) -> None:
        for text, key in [("prefix = 9;", "prefix"), ("init = ATZ | AT\u00e9", "init")]:
            config = parse_config(BASE + "[modems]\nlines = m1 serial:/dev/ttyS0\n" + text)
            with self.assertRaises(ConfigError) as caught:
                pool_from_config(MemoryReactorClock(), config.modems)
            self.assertEqual((caught.exception.section, caught.exception.key), ("modems", key))
