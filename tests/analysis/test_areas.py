"""The network model: the areas CSV, the tree and its checks; and etc/vee.ini."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from twisted.trial import unittest

from fep.analysis import areas, settings
from fep.analysis.areas import AreaKind, Direction, Role
from fep.errors import ConfigError
from fep.model import Meter, ObisCode

ROOT = Path(__file__).resolve().parents[2]

CSV = """area,name,kind,parent,meter,role,direction,phase
S1,North substation,substation,,,,,
F1,Feeder 1,feeder,S1,,,,
T1,Transformer 1,transformer,F1,,,,
T1,,,,SUM1,summary,in,
T1,,,,M1,member,,A
T1,,,,M2,,,ABC
F1,,,,FEED1,summary,in,
F1,,,,SUM1,summary,out,
"""


class AreaCsvTests(unittest.TestCase):
    def test_read(self) -> None:
        network = areas.read_csv(CSV)
        self.assertEqual([a.id for a in network.areas], ["S1", "F1", "T1"])
        self.assertEqual(network.area("T1"), areas.Area("T1", "Transformer 1",
                                                        AreaKind.TRANSFORMER, "F1"))
        self.assertEqual([(m.meter, m.direction) for m in network.summary("T1")],
                         [("SUM1", Direction.IN)])
        self.assertEqual([(m.meter, m.role, m.phase) for m in network.members("T1")],
                         [("M1", Role.MEMBER, "A"), ("M2", Role.MEMBER, "ABC")])
        self.assertEqual([a.id for a in network.path("T1")], ["S1", "F1", "T1"])
        self.assertEqual([a.id for a in network.subtree("F1")], ["F1", "T1"])
        self.assertEqual(network.areas_of("SUM1"), ["F1", "T1"])

    def test_round_trip(self) -> None:
        network = areas.read_csv(CSV)
        again = areas.read_csv(areas.write_csv(network))
        # Written area by area: the same areas and links, the links grouped by area.
        self.assertEqual(again.areas, network.areas)
        self.assertEqual(set(again.meters), set(network.meters))

    def test_tree_lines(self) -> None:
        self.assertEqual(areas.tree_lines(areas.read_csv(CSV)), [
            "S1 (substation) North substation: 0 summary, 0 members",
            "  F1 (feeder) Feeder 1: 2 summary, 0 members",
            "    T1 (transformer) Transformer 1: 1 summary, 2 members",
        ])

    def test_errors_name_the_line_and_key(self) -> None:
        bad = "area,kind\nT1,hut\n"
        with self.assertRaises(ConfigError) as e:
            areas.read_csv(bad, "a.csv")
        self.assertIn("line 2: kind 'hut'", str(e.exception))
        self.assertEqual((e.exception.file, e.exception.key), ("a.csv", "kind"))

    def test_unknown_parent_and_cycles_are_refused(self) -> None:
        with self.assertRaisesRegex(ConfigError, "no parent area 'X'"):
            areas.read_csv("area,parent\nA,X\n")
        with self.assertRaisesRegex(ConfigError, "cycle"):
            areas.read_csv("area,parent\nA,B\nB,A\n")
        with self.assertRaisesRegex(ConfigError, "no area 'Z'"):
            areas.read_csv("area,meter\nZ,M1\n")
        with self.assertRaisesRegex(ConfigError, "listed twice"):
            areas.read_csv("area,meter\nA,\nA,M1\nA,M1\n")
        with self.assertRaisesRegex(ConfigError, "declared twice"):
            areas.read_csv("area\nA\nA\n")
        with self.assertRaisesRegex(ConfigError, "phase 'D'"):
            areas.read_csv("area,meter,phase\nA,,\nA,M1,D\n")

    def test_merge_replaces_the_named_areas_meters(self) -> None:
        old = areas.read_csv(CSV)
        new = areas.read_csv("area,parent,meter,role\nT1,F1,,\nT1,,M9,\n".replace(
            "T1,F1,,", "T1,,,"))
        merged = areas.merge(old, new)
        self.assertEqual([m.meter for m in merged.members("T1")], ["M9"])
        self.assertEqual(merged.summary("T1"), [])
        self.assertEqual([m.meter for m in merged.summary("F1")], ["FEED1", "SUM1"])


class VeeIniTests(unittest.TestCase):
    def test_example_file_parses(self) -> None:
        loaded = settings.load(ROOT / "etc" / "vee.example.ini")
        self.assertEqual(loaded.channel, ObisCode(1, 0, 1, 29, 0))
        self.assertIn("commercial", loaded.rule_sets)

    def test_group_overrides_default(self) -> None:
        text = ("[vee]\nchannel = 1-0:1.8.0\nperiod = 30m\nmodulus = 100000000\n"
                "[rules:default]\nhigh = 5000\nregister_tolerance = 0.5 %\n"
                "[rules:pumps]\nhigh = 50000\nrules = missing, limits\n"
                "[balance]\nlow = 1\nhigh = 6\n[balance:T9]\nhigh = 12\n")
        loaded = settings.parse(text)
        self.assertEqual(loaded.period.total_seconds(), 1800)
        pump = Meter("P1", "dlms", "tcp:x:1", metadata={"group": "north, pumps"})
        plain = Meter("H1", "dlms", "tcp:x:1")
        self.assertEqual(loaded.rule_set(pump).high, D(50000))
        self.assertEqual(loaded.rule_set(pump).register_tolerance, D("0.005"))
        self.assertEqual(loaded.rule_set(pump).rules, frozenset({"missing", "limits"}))
        self.assertEqual(loaded.rule_set(plain).high, D(5000))
        self.assertEqual((loaded.band_for("T1").low, loaded.band_for("T1").high), (D(1), D(6)))
        self.assertEqual((loaded.band_for("T9").low, loaded.band_for("T9").high), (D(1), D(12)))

    def test_balance_band_is_in_percent_with_or_without_the_sign(self) -> None:
        """``high = 8 %`` is 8 % like ``high = 8``, not the share 0.08 (a band of 0.08 %,
        which would flag every area)."""
        signed = settings.parse("[balance]\nlow = 2 %\nhigh = 8 %\n[balance:T9]\nhigh = 12%\n")
        plain = settings.parse("[balance]\nlow = 2\nhigh = 8\n[balance:T9]\nhigh = 12\n")
        for loaded in (signed, plain):
            self.assertEqual((loaded.band_for("T1").low, loaded.band_for("T1").high),
                             (D(2), D(8)))
            self.assertEqual(loaded.band_for("T9").high, D(12))
        with self.assertRaises(ConfigError) as e:
            settings.parse("[balance]\nhigh = lots %\n")
        self.assertEqual((e.exception.section, e.exception.key), ("balance", "high"))

    def test_errors_name_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as e:
            settings.parse("[rules:default]\nrules = missing, telepathy\n", "v.ini")
        self.assertEqual((e.exception.section, e.exception.key), ("rules:default", "rules"))
        with self.assertRaisesRegex(ConfigError, "unknown key"):
            settings.parse("[vee]\ncolour = red\n")
        with self.assertRaisesRegex(ConfigError, "unknown section"):
            settings.parse("[weather]\n")
