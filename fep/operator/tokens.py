"""API tokens: a file of ``NAME ROLE TOKEN`` lines, read at start.

``ROLE`` is ``viewer`` (may look) or ``operator`` (may also read meters and run tasks, see
:mod:`fep.operator.commands`). Blank lines and ``#`` comments are ignored. A token is checked
in constant time; the name is what logs show, never the token.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import attrs

from fep.errors import ConfigError
from fep.operator.commands import ROLES

MIN_TOKEN_LENGTH = 16


@attrs.frozen
class ApiUser:
    name: str
    role: str


@attrs.frozen
class TokenFile:
    entries: tuple[tuple[str, str, bytes], ...]

    @classmethod
    def parse(cls, text: str, file: str = "<tokens>") -> TokenFile:
        entries = []
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
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"line {number}: the token of {name} is shorter than "
                                  f"{MIN_TOKEN_LENGTH} characters", file=file)
            entries.append((name, role, token.encode()))
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: str | Path) -> TokenFile:
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
        for name, role, known in self.entries:
            # Every entry is compared, so timing says nothing about which one matched.
            if hmac.compare_digest(known, token):
                found = ApiUser(name, role)
        return found
