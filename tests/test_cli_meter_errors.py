"""``fep read`` against the simulators when the meter itself says no: exit status 3 and one
line on stderr naming the route, the meter and the meter's own error (issue 4 acceptance).
The simulators run as real processes; ``fep`` runs in-process through ``fep.cli.main``."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.inprocess import fep_deferred as fep
from tests.processes import tcp_simulator


class C12RefusalTests(unittest.TestCase):
    @inlineCallbacks
    def test_wrong_password_exits_3_with_the_meters_isc(self) -> Any:
        route = yield tcp_simulator(self, "ansi_c12", "--tcp", "0", "--password", "right")
        result = yield fep(
            "read", route, "--protocol", "ansi-c12", "--meter", "ELSTER-7",
            "--password", "wrong-one",
        )  # fmt: skip
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f"fep: route {route}: meter ELSTER-7 refused security: "
            "isc (insufficient security clearance)\n",
        )

    @inlineCallbacks
    def test_refused_table_exits_3_naming_meter_table_and_code(self) -> Any:
        route = yield tcp_simulator(self, "ansi_c12", "--tcp", "0", "--password", "right")
        result = yield fep(
            "read", route, "--protocol", "ansi-c12", "--meter", "ELSTER-7",
            "--password", "right", "--table", "ST99",
        )  # fmt: skip
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(
            result.stderr,
            f"fep: route {route}: meter ELSTER-7: not read: ST99: meter ELSTER-7 refused read "
            "of table 99: iar (inappropriate action requested)\n",
        )


class C1221RefusalTests(unittest.TestCase):
    @inlineCallbacks
    def test_wrong_key_exits_3_with_the_meters_isc(self) -> Any:
        route = yield tcp_simulator(
            self, "ansi_c12", "--tcp", "0", "--password", "", "--c1221",
            "--auth-key", "0123456789ABCDEF",
        )  # fmt: skip
        result = yield fep(
            "read", route, "--protocol", "ansi-c12.21", "--meter", "DIAL-9",
            "-o", "c12_auth_key=FEDCBA9876543210",
        )  # fmt: skip
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(
            result.stderr,
            f"fep: route {route}: meter DIAL-9 refused authenticate: "
            "isc (insufficient security clearance)\n",
        )


class Dlt645ErrorResponseTests(unittest.TestCase):
    @inlineCallbacks
    def test_unauthorised_read_exits_3_with_the_error_bits_by_name(self) -> Any:
        route = yield tcp_simulator(
            self, "dlt645", "--port", "0", "--refuse", "00010000=04"
        )
        result = yield fep(
            "read", route, "--protocol", "dlt645", "--address", "000000123456",
            "--meter", "SH-0042", "--di", "00010000",
        )  # fmt: skip
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f"fep: route {route}: meter SH-0042 refused read data: wrong password or "
            "unauthorised (error status 0x04), DI 00010000\n",
        )

    @inlineCallbacks
    def test_several_error_bits_are_all_named(self) -> Any:
        # 0x41: other error and too many tariffs.
        route = yield tcp_simulator(
            self, "dlt645", "--port", "0", "--refuse", "00010000=41"
        )
        result = yield fep(
            "read", route, "--protocol", "dlt645", "--address", "000000123456",
            "--di", "00010000",
        )  # fmt: skip
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn(
            "meter 000000123456 refused read data: other error, too many tariffs "
            "(error status 0x41), DI 00010000",
            result.stderr,
        )
        self.assertIn(route, result.stderr)
