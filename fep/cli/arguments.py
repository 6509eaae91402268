"""Values a `fep` command is given: times, ``KEY=VALUE`` options, and the store it names
(``--db URL`` or the ``[store]`` of ``--config FILE``), opened for the command's work."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from fep.cli.output import UsageError
from fep.errors import ConfigError

DEFAULT_DB = "sqlite:var/fep.sqlite"


def parse_time(text: str) -> datetime:
    """ISO-8601; a time without zone is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def read_options(options: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` settings from the command line, as meter metadata."""
    metadata: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"option {option!r} is not KEY=VALUE", key="--option")
        metadata[key.strip()] = value.strip()
    return metadata


def db_url(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    if args.config:
        from fep.config import load_config

        return load_config(args.config).store.url
    return DEFAULT_DB


async def with_store(
    args: argparse.Namespace,
    work: Callable[[Any], Coroutine[Any, Any, int]],
    *,
    migrate: bool = True,
) -> int:
    """Open the store the command names, run ``work(store)`` on it, close it."""
    from twisted.internet import reactor

    from fep.reactors import IStoreReactor
    from fep.store import open_store

    store = open_store(db_url(args), cast(IStoreReactor, reactor))
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()
