"""Stores: where records are committed and queried (SQLite, PostgreSQL), and the spool.

``open_store(url)`` picks the store a URL names: ``sqlite:PATH`` (relative to the working
directory; ``sqlite::memory:`` for tests) or ``postgresql://...``/``postgres://...``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from fep.errors import ConfigError
from fep.interfaces import IStore
from fep.reactors import IStoreReactor

# A password given as a key=value pair (libpq DSN or URL query): up to a space or '&'.
_PASSWORD_KV = re.compile(r"(password\s*=\s*)[^\s&]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _PASSWORD_KV.sub(r"\1***", url)
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    # Also covers libpq "key=value" strings, which urlsplit takes for a bare path.
    return _PASSWORD_KV.sub(r"\1***", urlunsplit(parts))


def open_store(url: str, reactor: IStoreReactor | None = None, *, pool_size: int = 2) -> IStore:
    """The store a URL names (not yet open: call ``open()``)."""
    if url.startswith("sqlite:"):
        from fep.store.sqlite import SqliteStore

        path = url[len("sqlite:") :]
        if not path:
            raise ConfigError(f"store URL {url!r} names no file (sqlite:PATH)", key="url")
        return SqliteStore(path, reactor, url=url)
    if url.startswith(("postgresql://", "postgres://")):
        from fep.store.postgres import PostgresStore

        return PostgresStore(url, reactor, pool_size=pool_size)
    raise ConfigError(
        f"unknown store URL {redact_url(url)!r}: use sqlite:PATH or postgresql://...",
        key="url",
    )
