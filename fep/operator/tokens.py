"""API tokens: a file of ``NAME ROLE TOKEN`` lines, read at start.

``ROLE`` is ``viewer`` (may look) or ``operator`` (may also read meters and run tasks, see
:mod:`fep.operator.commands`). Blank lines and ``#`` comments are ignored. A token is checked
in constant time; the name is what logs show, never the token.

``TOKEN`` is best given hashed, ``sha256:HEX`` (``fep keys token NAME ROLE`` makes a token
and its line): the file then holds nothing that opens the API. A clear token still works,
with a warning. Only hashes are kept in memory and compared. The file must not be readable
by its group or others (like the console's host key).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import attrs
from twisted.logger import Logger

from fep.errors import ConfigError
from fep.operator.commands import ROLES

log = Logger()

MIN_TOKEN_LENGTH = 16
HASH_PREFIX = "sha256:"


def token_hash(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def token_line(name: str, role: str, token: str) -> str:
    """The token file line that lets ``token`` in as ``name`` with ``role``, hashed."""
    return f"{name} {role} {HASH_PREFIX}{token_hash(token.encode()).hex()}"


@attrs.frozen
class ApiUser:
    name: str
    role: str


@attrs.frozen
class TokenFile:
    # (name, role, SHA-256 of the token)
    entries: tuple[tuple[str, str, bytes], ...] = attrs.field(repr=False)
    # How many entries gave their token in clear (warned about at load).
    clear: int = 0

    @classmethod
    def parse(cls, text: str, file: str = "<tokens>") -> TokenFile:
        entries = []
        clear = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ConfigError(f"line {number}: expected NAME ROLE TOKEN", file=file)
            name, role, token = parts
            if role not in ROLES:
                raise ConfigError(f"line {number}: role {role!r} is not one of "
                                  f"{', '.join(ROLES)}", file=file)
            if token.lower().startswith(HASH_PREFIX):
                try:
                    digest = bytes.fromhex(token[len(HASH_PREFIX):])
                except ValueError:
                    digest = b""
                if len(digest) != hashlib.sha256().digest_size:
                    raise ConfigError(f"line {number}: the token hash of {name} is not "
                                      f"{HASH_PREFIX} and 64 hex digits", file=file)
                entries.append((name, role, digest))
                continue
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"line {number}: the token of {name} is shorter than "
                                  f"{MIN_TOKEN_LENGTH} characters", file=file)
            clear += 1
            entries.append((name, role, token_hash(token.encode())))
        if clear:
            log.warn("{file}: {count} API token(s) in clear; keep only their hashes "
                     "(fep keys token NAME ROLE makes an entry)", file=file, count=clear)
        return cls(tuple(entries), clear)

    @classmethod
    def load(cls, path: str | Path) -> TokenFile:
        from fep.vault import check_private

        check_private(Path(path), "http", "tokens_file", "the API token file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the API token file: {e.strerror}",
                              file=str(path)) from None
        return cls.parse(text, str(path))

    def user(self, token: bytes | None) -> ApiUser | None:
        """Who a presented token belongs to, or None."""
        if not token:
            return None
        found = None
        presented = token_hash(token)
        for name, role, known in self.entries:
            # Every entry is compared, so timing says nothing about which one matched.
            if hmac.compare_digest(known, presented):
                found = ApiUser(name, role)
        return found
