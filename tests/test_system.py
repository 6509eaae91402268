"""tests.system: a missing program or service skips its tests naming the Debian package, and
fails them under CI=true."""

from __future__ import annotations

import os
import socket

from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from tests.system import require_module, require_program, require_service


class MissingTests(unittest.TestCase):
    def setUp(self) -> None:
        saved = os.environ.get("CI")
        self.addCleanup(lambda: os.environ.__setitem__("CI", saved) if saved is not None
                        else os.environ.pop("CI", None))

    def closed_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])  # nothing listens once it is closed

    def test_a_missing_program_skips_naming_its_package(self) -> None:
        os.environ.pop("CI", None)
        with self.assertRaises(SkipTest) as caught:
            require_program("fep-no-such-program", package="fep-no-such-package")
        self.assertIn("fep-no-such-package", str(caught.exception))

    def test_a_missing_program_fails_under_ci(self) -> None:
        os.environ["CI"] = "true"
        with self.assertRaises(AssertionError):
            require_program("fep-no-such-program", package="fep-no-such-package")

    def test_a_present_program_is_found(self) -> None:
        self.assertTrue(require_program("sh", package="dash").endswith("sh"))

    def test_a_missing_service_skips_or_fails_under_ci(self) -> None:
        port = self.closed_port()
        os.environ.pop("CI", None)
        with self.assertRaises(SkipTest):
            require_service("127.0.0.1", port, what="a broker", package="rabbitmq-server")
        os.environ["CI"] = "true"
        with self.assertRaises(AssertionError):
            require_service("127.0.0.1", port, what="a broker", package="rabbitmq-server")

    def test_a_missing_python_package_skips_naming_it_or_fails_under_ci(self) -> None:
        os.environ.pop("CI", None)
        with self.assertRaises(SkipTest) as caught:
            require_module("fep_no_such_module", pip="fep-no-such-package")
        self.assertIn("pip install 'fep-no-such-package'", str(caught.exception))
        os.environ["CI"] = "true"
        with self.assertRaises(AssertionError):
            require_module("fep_no_such_module", pip="fep-no-such-package")

    def test_a_present_python_package_is_imported(self) -> None:
        self.assertEqual(require_module("json", pip="json").__name__, "json")
