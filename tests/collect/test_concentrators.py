"""Concentrator records: who owns whom, the read order of a line, and the errors that name
the meter and the ``concentrator`` key."""

from __future__ import annotations

from twisted.trial import unittest

from fep.collect.concentrators import LineStep, check_owner, concentrator_of, line_order
from fep.errors import ConfigError
from fep.model import Meter

LINE = "serial:/dev/ttyS3:9600:8E1"


def meter(meter_id: str, address: str, owner: str | None = None, line: str = LINE) -> Meter:
    return Meter(meter_id, "dlt645", f"{line}@{address}",
                 metadata={"concentrator": owner} if owner else {})


class LineOrderTests(unittest.TestCase):
    def test_owned_meters_follow_their_concentrator(self) -> None:
        c = meter("c", "000000000001")
        a, b = meter("a", "000000000002", "c"), meter("b", "000000000003", "c")
        free = meter("free", "000000000004")
        steps, bad = line_order([a, free, b, c])
        self.assertEqual(steps, [LineStep(free), LineStep(c, (a, b))])
        self.assertEqual(bad, [])

    def test_owned_meter_read_alone_when_its_concentrator_is_not_in_the_cycle(self) -> None:
        c = meter("c", "000000000001")
        a = meter("a", "000000000002", "c")
        steps, bad = line_order([a], known=[c])
        self.assertEqual((steps, bad), ([LineStep(a)], []))

    def test_line_settings_may_differ_but_not_the_device(self) -> None:
        c = meter("c", "000000000001")
        a = meter("a", "000000000002", "c", line="serial:/dev/ttyS3:2400:8E1:gap=0.05")
        check_owner(a, {"c": c})
        astray = meter("x", "000000000002", "c", line="serial:/dev/ttyS4:9600:8E1")
        with self.assertRaises(ConfigError) as caught:
            check_owner(astray, {"c": c})
        self.assertEqual(caught.exception.key, "concentrator")
        self.assertIn("meter x", str(caught.exception))
        self.assertIn("/dev/ttyS3", str(caught.exception))

    def test_errors_name_the_meter_and_key(self) -> None:
        c = meter("c", "000000000001", owner="d")
        cases = {
            "unknown": (meter("u", "000000000002", "nobody"), "not a known meter"),
            "nested": (meter("n", "000000000002", "c"), "cannot itself be behind"),
            "self": (meter("s", "000000000002", "s"), "cannot itself be behind"),
        }
        known = {"c": c, "d": meter("d", "000000000009")}
        for name, (m, text) in cases.items():
            known_here = {**known, m.id: m}
            with self.assertRaises(ConfigError, msg=name) as caught:
                check_owner(m, known_here)
            self.assertIn(text, str(caught.exception))
            self.assertIn(f"meter {m.id}", str(caught.exception))
            self.assertEqual(caught.exception.key, "concentrator")

    def test_bad_owners_are_set_aside_the_rest_are_read(self) -> None:
        c = meter("c", "000000000001")
        bad_one = meter("u", "000000000002", "nobody")
        steps, bad = line_order([c, bad_one])
        self.assertEqual(steps, [LineStep(c)])
        self.assertEqual([m.id for m, _ in bad], ["u"])

    def test_blank_concentrator_is_none(self) -> None:
        self.assertIsNone(concentrator_of(Meter("m", "dlt645", LINE, metadata={
            "concentrator": "  "})))
