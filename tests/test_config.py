"""Tests for fep.config: every error names the file, the section and the key."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from fep.config import SCHEMA, load_config, parse_config
from fep.errors import ConfigError

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
