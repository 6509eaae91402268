"""Tests for fep.config: every error names the file, the section and the key."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import attrs
from twisted.trial import unittest

import fep.config
from fep.config import SCHEMA, SECTIONS, Config, default_config, load_config, parse_config
from fep.errors import ConfigError
from fep.options import Option, Section, positive_int, words, yes_no

MINIMAL = "[fep]\n[store]\n"


class ConfigTests(unittest.TestCase):
    def test_minimal_file_takes_every_default(self) -> None:
        config = parse_config(MINIMAL, "fep.ini")
        self.assertEqual(config.store.url, "sqlite:var/fep.sqlite")
        self.assertEqual(config.collect.period, 900.0)
        self.assertEqual(str(config.spool_directory), "var/spool")

    def test_values_are_converted_to_their_types(self) -> None:
        config = parse_config(
            MINIMAL + "[collect]\nperiod = 5\nconcurrency = 3\nenabled = no\n", "fep.ini")
        self.assertEqual(config.collect.period, 5.0)
        self.assertEqual(config.collect.concurrency, 3)
        self.assertFalse(config.collect.enabled)

    def test_store_retention_is_read_in_months_and_empty_keeps_everything(self) -> None:
        pg = "[fep]\n[store]\nurl = postgresql://fep@db/fep\n"
        self.assertIsNone(parse_config(pg, "fep.ini").store.retention)
        self.assertEqual(parse_config(pg + "retention = 24 months\n", "fep.ini").store.retention,
                         24)
        config = parse_config(pg + "retention = 2 years\npartitions_ahead = 6\n", "fep.ini")
        self.assertEqual((config.store.retention, config.store.partitions_ahead), (24, 6))
        for bad in ("24", "0 months", "two years", "3 weeks"):
            with self.assertRaises(ConfigError) as caught:
                parse_config(pg + f"retention = {bad}\n", "fep.ini")
            self.assertEqual(caught.exception.key, "retention")

    def test_store_retention_on_sqlite_is_an_error_naming_the_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL + "retention = 12 months\n", "fep.ini")
        self.assertEqual((caught.exception.section, caught.exception.key), ("store", "retention"))
        self.assertIn("not supported on SQLite", str(caught.exception))

    def test_missing_section_is_named(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config("[fep]\n", "etc/site.ini")
        self.assertEqual((caught.exception.file, caught.exception.section),
                         ("etc/site.ini", "store"))
        self.assertIn("etc/site.ini [store]: missing section", str(caught.exception))

    def test_wrong_type_names_file_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL + "[collect]\nperiod = soon\n", "etc/site.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("etc/site.ini", "collect", "period"))
        self.assertIn("etc/site.ini [collect] period: expected a positive number", str(e))

    def test_unknown_key_names_file_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL + "[spool]\nbatchsize = 10\n", "etc/site.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("etc/site.ini", "spool", "batchsize"))
        self.assertIn("batch_size", str(e))

    def test_unknown_section_is_named(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL + "[stroe]\n", "etc/site.ini")
        self.assertEqual(caught.exception.section, "stroe")

    def test_unreadable_file_is_named(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_config(Path(self.mktemp()))
        self.assertIn("cannot read", str(caught.exception))

    def test_shipped_example_documents_every_option_with_its_default(self) -> None:
        path = Path(__file__).parent.parent / "etc" / "fep.ini"
        text = path.read_text()
        config = load_config(path)
        self.assertIsNotNone(config)
        for section, options in SCHEMA.items():
            self.assertIn(f"[{section}]", text)
            for key, option in options.items():
                default = option.default
                if isinstance(default, bool):
                    default = "yes" if default else "no"
                elif isinstance(default, tuple):
                    default = ", ".join(default)
                self.assertIn(f"{key} = {default}".rstrip(), text,
                              f"[{section}] {key} is not documented with its default")


def _ini_file() -> Path:
    return Path(__file__).parent.parent / "etc" / "fep.ini"


def _shipped_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.read_string(_ini_file().read_text(encoding="utf-8"), source=str(_ini_file()))
    return parser


class DeclarationTests(unittest.TestCase):
    """Every option has one declaration (fep.options), made by the subsystem that owns its
    section; etc/fep.ini documents exactly the declared options, with the same defaults."""

    def test_every_declared_option_is_in_the_shipped_file_with_its_default(self) -> None:
        shipped = _shipped_sections()
        for section in SECTIONS:
            self.assertTrue(shipped.has_section(section.name), f"[{section.name}] not shown")
            for key, option in section.options.items():
                self.assertTrue(shipped.has_option(section.name, key),
                                f"[{section.name}] {key} is not in etc/fep.ini")
                self.assertEqual(option.value(shipped.get(section.name, key)),
                                 option.default_value(),
                                 f"[{section.name}] {key}: etc/fep.ini shows another default")
                self.assertTrue(option.doc.strip(), f"[{section.name}] {key} has no doc")

    def test_every_option_in_the_shipped_file_is_declared(self) -> None:
        shipped = _shipped_sections()
        for name in shipped.sections():
            self.assertIn(name, SCHEMA, f"etc/fep.ini shows [{name}], which nothing declares")
            for key in shipped.options(name):
                self.assertIn(key, SCHEMA[name],
                              f"etc/fep.ini shows [{name}] {key}, which nothing declares")

    def test_the_shipped_file_is_every_default(self) -> None:
        self.assertEqual(load_config(_ini_file()), attrs.evolve(default_config(),
                                                                source=str(_ini_file())))

    def test_config_applies_declarations_and_imports_no_parser(self) -> None:
        """fep/config.py takes the subsystems' Section declarations and settings classes,
        nothing else: the parsers are the subsystems' own."""
        tree = ast.parse(Path(fep.config.__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("fep."):
                continue
            if node.module in ("fep.errors", "fep.options", "fep.vault"):
                continue
            for alias in node.names:
                value = getattr(fep.config, alias.asname or alias.name)
                self.assertTrue(isinstance(value, (Section, type)),
                                f"fep.config imports {alias.name} from {node.module}")
        self.assertEqual(sorted(s.name for s in SECTIONS),
                         sorted(set(attrs.fields_dict(Config)) - {"source"}))

    def test_values_are_typed_once_at_load(self) -> None:
        config = parse_config(MINIMAL + (
            "[collect]\nshared_lines = dialup=4, csd=2\napproval = disconnect\n"
            "[gprs]\nlisten = tcp:4070, tcp:4071\nheartbeat = hex:A5FE\nidentify = ascii dlms\n"
            "[dlms]\nsystem_title = 4D4D4D0000BC614E\n"
            "[modems]\nlines = m1 serial:/dev/ttyS0 usrobotics\ninit = ATZ | ATE0\n"
            "[listeners]\nssh.idle_timeout =\nhttp.max_per_source = 3\n"
            "[sms]\nrules = TAMPER => cover-open\n"), "fep.ini")
        self.assertEqual(config.collect.shared_lines, {"dialup": 4, "csd": 2})
        self.assertEqual(config.collect.approval, frozenset({"disconnect"}))
        self.assertEqual(config.gprs.listen, ("tcp:4070", "tcp:4071"))
        self.assertEqual(config.gprs.heartbeat, (b"\xa5\xfe",))
        self.assertEqual(config.gprs.identify, ("ascii", "dlms"))
        self.assertEqual(config.dlms.system_title, bytes.fromhex("4d4d4d0000bc614e"))
        self.assertEqual(config.modems.lines, (("m1", "serial:/dev/ttyS0", "usrobotics"),))
        self.assertEqual(config.modems.init, ("ATZ", "ATE0"))
        self.assertEqual(config.listeners.overrides["http"]["max_per_source"], 3)
        self.assertNotIn("idle_timeout", config.listeners.overrides["ssh"])
        self.assertEqual([rule.pattern.pattern for rule in config.sms.event_rules], ["TAMPER"])

    def test_a_value_checked_with_others_names_file_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL + "[gprs]\nregistration = ID:(\\d+)\n", "etc/site.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("etc/site.ini", "gprs", "registration"))


class SectionTests(unittest.TestCase):
    """fep.options.Section: a subsystem's declaration, applied."""

    SECTION = Section("demo", {
        "count": Option(positive_int, 2, "how many"),
        "names": Option(words, "a b", "which"),
        "on": Option(yes_no, False, "whether"),
    }, lambda **values: values)

    def test_defaults_are_typed_like_values(self) -> None:
        self.assertEqual(self.SECTION.read(None), {"count": 2, "names": ("a", "b"), "on": False})

    def test_values_from_the_file(self) -> None:
        self.assertEqual(self.SECTION.read([("count", "5"), ("on", "yes")], "x.ini"),
                         {"count": 5, "names": ("a", "b"), "on": True})

    def test_unknown_key_names_file_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.SECTION.read([("cuont", "5")], "x.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("x.ini", "demo", "cuont"))
        self.assertIn("known keys: count, names, on", str(e))

    def test_bad_value_says_what_is_expected(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.SECTION.read([("count", "0")], "x.ini")
        self.assertIn("x.ini [demo] count: expected a positive whole number, got '0'",
                      str(caught.exception))

    def test_errors_of_the_build_name_the_file(self) -> None:
        def build(**values: object) -> None:
            raise ConfigError("does not go with names", key="count")

        with self.assertRaises(ConfigError) as caught:
            Section("demo", self.SECTION.options, build).read(None, "x.ini")
        e = caught.exception
        self.assertEqual((e.file, e.section, e.key), ("x.ini", "demo", "count"))
