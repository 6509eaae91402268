"""API token files: hashed entries (``sha256:HEX``) let their token in, clear ones still do
with a warning, the file must be private to its owner, and no clear token is kept."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from fep.errors import ConfigError
from fep.operator.tokens import TokenFile, token_line

TOKEN = "s3cr3t-0123456789abcdef"


class HashedTokenTests(unittest.TestCase):
    def test_a_hashed_entry_lets_its_token_in(self) -> None:
        line = token_line("ops", "operator", TOKEN)
        self.assertNotIn(TOKEN, line)
        self.assertTrue(line.startswith("ops operator sha256:"))
        tokens = TokenFile.parse(line + "\n")
        user = tokens.user(TOKEN.encode())
        assert user is not None
        self.assertEqual((user.name, user.role), ("ops", "operator"))
        self.assertIsNone(tokens.user(b"s3cr3t-0123456789abcdeX"))
        self.assertEqual(tokens.clear, 0)
        self.assertNotIn(TOKEN.encode(), repr(tokens).encode() +
                         b"".join(e[2] for e in tokens.entries))

    def test_a_clear_token_still_works_but_is_warned_about(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tokens = TokenFile.parse(f"old viewer {TOKEN}\n", "tokens.txt")
        self.assertIsNotNone(tokens.user(TOKEN.encode()))
        self.assertEqual(tokens.clear, 1)
        self.assertTrue(any("in clear" in str(e.get("log_format")) for e in logged))

    def test_a_malformed_hash_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            TokenFile.parse("ops operator sha256:abcd\n", "tokens.txt")
        self.assertIn("tokens.txt", str(caught.exception))

    def test_a_token_file_others_may_read_is_refused(self) -> None:
        path = Path(self.mktemp())
        path.write_text(token_line("ops", "operator", TOKEN) + "\n")
        path.chmod(0o644)
        with self.assertRaises(ConfigError) as caught:
            TokenFile.load(path)
        self.assertIn(str(path), str(caught.exception))
        self.assertIn("readable by others", str(caught.exception))
        path.chmod(0o600)
        self.assertIsNotNone(TokenFile.load(path).user(TOKEN.encode()))
