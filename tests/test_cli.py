"""Tests for the `fep` command line run as a real process: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


def run_fep(
    *args: str, cwd: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "fep.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd or str(ROOT), env=env,
    )


class UsageTests(unittest.TestCase):
    def test_no_command_is_a_usage_error(self) -> None:
        result = run_fep()
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage: fep", result.stderr)

    def test_unknown_protocol_is_a_usage_error(self) -> None:
        result = run_fep("read", "tcp:host=127.0.0.1:port=1", "--protocol", "smoke-signals")
        self.assertEqual(result.returncode, 2)
        self.assertIn("unknown protocol 'smoke-signals'", result.stderr)

    def test_bad_route_is_a_usage_error_naming_the_route(self) -> None:
        result = run_fep("read", "carrier-pigeon", "--protocol", "iec62056-21")
        self.assertEqual(result.returncode, 2)
        self.assertIn("carrier-pigeon", result.stderr)

    def test_bad_config_names_file_section_and_key_with_exit_2(self) -> None:
        config = Path(self.mktemp())
        config.write_text("[fep]\n[store]\nurl = sqlite:x.db\n[collect]\nperiod = often\n")
        result = run_fep("--config", str(config), "meters", "list")
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"{config} [collect] period", result.stderr)

    def test_bad_obis_filter_is_a_usage_error(self) -> None:
        result = run_fep("readings", "m1", "--obis", "not-obis")
        self.assertEqual(result.returncode, 2)
        self.assertIn("not an OBIS code", result.stderr)
