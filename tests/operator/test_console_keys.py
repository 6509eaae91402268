"""Who may log in to the console: authorized_keys lines naming operator and role, the key
checker's refusal of DSA and SHA-1 RSA signatures, the three host keys; and the line parser
of the viewers' and operators' console (literals only, nothing evaluated)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.trial import unittest

from fep.operator.console_keys import (
    AuthorizedOperators,
    OperatorKeyChecker,
    host_keys,
    identity,
    parse_authorized_keys,
    signature_algorithms,
)
from fep.operator.console_lines import LineError, parse_command_line

SIGNED = b"session id and request"


def public_line(key: Key, comment: str = "") -> str:
    return (key.public().toString("OPENSSH").decode() + " " + comment).strip()


class AuthorizedKeysTests(unittest.TestCase):
    def setUp(self) -> None:
        self.alice = Key(ed25519.Ed25519PrivateKey.generate())
        self.bob = Key(ec.generate_private_key(ec.SECP256R1()))
        self.carol = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.anon = Key(ed25519.Ed25519PrivateKey.generate())

    def test_operator_and_role_from_the_comment_and_viewer_by_default(self) -> None:
        text = "\n".join([
            "# operators",
            public_line(self.alice, "alice role=operator"),
            'from="127.0.0.1",no-agent-forwarding ' + public_line(self.bob,
                                                                   "role=admin operator=bob x"),
            public_line(self.carol, "carol"),
            public_line(self.anon),
        ])
        found = {(k.operator, k.role) for k in parse_authorized_keys(text.splitlines())}
        anon_fp = next(k for k in parse_authorized_keys(text.splitlines())
                       if k.key == self.anon.public()).fingerprint
        self.assertEqual(found, {("alice", "operator"), ("bob", "admin"), ("carol", "viewer"),
                                 (f"key:{anon_fp}", "viewer")})

    def test_bad_lines_grant_nothing(self) -> None:
        weak = Key(dsa.generate_private_key(key_size=1024))
        small = Key(rsa.generate_private_key(public_exponent=65537, key_size=1024))
        text = [public_line(self.alice, "alice role=root"),
                public_line(weak, "dave role=admin"),
                public_line(small, "erin role=admin"),
                public_line(self.bob, "b@d/name role=admin"),
                "ssh-ed25519 AAAAnotakey frank role=admin",
                "garbage"]
        self.assertEqual(parse_authorized_keys(text), [])


def credentials(key: Key, algorithm: bytes, signature_type: bytes | None = None,
                signed: bool = True, user: bytes = b"anyone") -> Any:
    signature = key.sign(SIGNED, signatureType=signature_type or algorithm) if signed else None
    return SSHPrivateKey(user, algorithm, key.public().blob(), SIGNED, signature)


class CheckerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.ed = Key(ed25519.Ed25519PrivateKey.generate())
        self.ec = Key(ec.generate_private_key(ec.SECP384R1()))
        self.rsa = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.dsa = Key(dsa.generate_private_key(key_size=1024))
        path = Path(self.mktemp())
        path.write_text("\n".join([
            public_line(self.ed, "alice role=operator"),
            public_line(self.ec, "bob role=admin"),
            public_line(self.rsa, "carol"),
            # A DSA line is ignored (and logged), so it cannot be used even if listed.
            public_line(self.dsa, "dave role=admin"),
        ]) + "\n")
        self.checker = OperatorKeyChecker(AuthorizedOperators(path))

    async def test_modern_signatures_log_in_as_the_keys_operator(self) -> None:
        for key, algorithm, who in ((self.ed, b"ssh-ed25519", ("alice", "operator")),
                                    (self.ec, b"ecdsa-sha2-nistp384", ("bob", "admin")),
                                    (self.rsa, b"rsa-sha2-256", ("carol", "viewer")),
                                    (self.rsa, b"rsa-sha2-512", ("carol", "viewer"))):
            avatar = await self.checker.requestAvatarId(credentials(key, algorithm,
                                                                    user=b"root"))
            operator, role, fingerprint = identity(avatar)
            self.assertEqual((operator, role), who)  # never the SSH user name
            self.assertTrue(fingerprint.startswith("SHA256:"))

    async def test_a_key_query_without_signature_is_answered_for_listed_keys_only(self) -> None:
        with self.assertRaises(ValidPublicKey):
            await self.checker.requestAvatarId(credentials(self.ed, b"ssh-ed25519",
                                                           signed=False))
        stranger = Key(ed25519.Ed25519PrivateKey.generate())
        with self.assertRaises(UnauthorizedLogin):
            await self.checker.requestAvatarId(credentials(stranger, b"ssh-ed25519",
                                                           signed=False))

    async def test_sha1_rsa_dsa_and_mismatched_signatures_are_refused(self) -> None:
        for creds in (
            credentials(self.rsa, b"ssh-rsa"),  # RSA with SHA-1
            credentials(self.rsa, b"ssh-rsa", signed=False),  # not even a query
            credentials(self.rsa, b"rsa-sha2-256", signature_type=b"ssh-rsa"),
            credentials(self.dsa, b"ssh-dss"),
            credentials(self.ed, b"rsa-sha2-256", signature_type=b"ssh-ed25519"),
        ):
            with self.assertRaises(UnauthorizedLogin):
                await self.checker.requestAvatarId(creds)
        forged = credentials(self.ed, b"ssh-ed25519")
        forged.sigData = b"another session"
        with self.assertRaises(UnauthorizedLogin):
            await self.checker.requestAvatarId(forged)


class HostKeyTests(unittest.TestCase):
    def test_ed25519_ecdsa_and_rsa_made_once_owner_only(self) -> None:
        path = Path(self.mktemp()) / "host_key"
        keys = host_keys(path)
        self.assertEqual(set(keys), {b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ssh-rsa"})
        for name in ("host_key", "host_key_ecdsa", "host_key_rsa"):
            self.assertEqual(stat.S_IMODE((path.parent / name).stat().st_mode), 0o600)
        self.assertEqual(host_keys(path), keys)
        advertised = signature_algorithms(keys.values())
        self.assertIn(b"rsa-sha2-512", advertised)
        self.assertIn(b"rsa-sha2-256", advertised)
        self.assertNotIn(b"ssh-rsa", advertised)
        self.assertNotIn(b"ssh-dss", advertised)


class CommandLineTests(unittest.TestCase):
    def test_words_and_literal_calls(self) -> None:
        self.assertEqual(parse_command_line("command m1 disconnect reason=unpaid"),
                         ("command", ["m1", "disconnect"], {"reason": "unpaid"}))
        self.assertEqual(parse_command_line("approve 7"), ("approve", ["7"], {}))
        self.assertEqual(parse_command_line("read m1 dlt645_items=00010000"),
                         ("read", ["m1"], {"dlt645_items": "00010000"}))
        self.assertEqual(parse_command_line('read("m1", dlt645_items="00010000")'),
                         ("read", ["m1"], {"dlt645_items": "00010000"}))
        self.assertEqual(parse_command_line("help"), ("help", [], {}))
        self.assertIsNone(parse_command_line("   "))

    def test_anything_but_literals_is_refused(self) -> None:
        for line in ("__import__('os').system('id')", "read(open('/etc/passwd').read())",
                     "ctx.store", "6*7", "read(*x)", "read(**x)", "read(x)",
                     "(lambda: 1)()", "read(" * 200 + ")" * 200, "x" * 3000):
            with self.assertRaises(LineError, msg=line):
                parse_command_line(line)
