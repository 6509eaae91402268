"""The configuration's ``secret:NAME`` values and the configured master key: a value such as
``[sms] pin = secret:sms-pin`` is the configuration secret NAME in the secret store
(``fep keys import - NAME``), opened when the daemon (or a command) is built. The daemon and
the command line both use this; neither imports the other."""

from __future__ import annotations

import sys
from typing import Any

import attrs

from fep.errors import ConfigError
from fep.options import Option, Section, text
from fep.vault import (
    CONFIG_SECRETS,
    MasterKey,
    create_master_key,
    load_master_key,
    open_sealed,
    spec_file,
)

SECRET_PREFIX = "secret:"
# (section, key) of the configuration values that may be ``secret:NAME``.
CONFIG_SECRET_FIELDS = (("sms", "pin"), ("northbound", "amqp_url"))
CONFIG_METER = "-"  # how the command line names the configuration's secrets


@attrs.frozen
class SecretsSection:
    """``[secrets]``: where the secret store's master key is."""

    master_key: str


SECRETS = Section("secrets", {
    "master_key": Option(
        text, "", "master key of the secret store (meter keys and passwords, secret:NAME "
        "values): file:PATH (mode 0600), env:NAME or credential:NAME (systemd "
        "LoadCredential=); empty: file:DATA_DIR/master.key"
    ),
}, SecretsSection)


def master_key_for(config: Any, *, create: bool = False) -> MasterKey:
    """The configured master key; with ``create``, the default file is made when missing
    (said on stderr: it must be backed up)."""
    spec = config.master_key_spec
    path = spec_file(spec)
    if create and not config.secrets.master_key and path is not None and not path.exists():
        key = create_master_key(spec)
        print(f"fep: made the master key {path} (id {key.key_id}); back it up: the secret "
              "store cannot be opened without it", file=sys.stderr)
        return key
    return load_master_key(spec)


def resolve_config_secrets(config: Any) -> Any:
    """The configuration with every ``secret:NAME`` value opened from the secret store
    (ConfigError naming the section and key when the secret is missing)."""
    from fep.store.secrets import read_sync

    wanted: dict[tuple[str, str], str] = {}
    for section, key in CONFIG_SECRET_FIELDS:
        value = getattr(getattr(config, section), key)
        if isinstance(value, str) and value.startswith(SECRET_PREFIX):
            wanted[(section, key)] = value[len(SECRET_PREFIX):].strip()
    if not wanted:
        return config
    master = master_key_for(config)
    rows = {row.info.name: row for row in read_sync(config.store.url, CONFIG_SECRETS,
                                                    sorted(set(wanted.values())))}
    changes: dict[str, dict[str, str]] = {}
    for (section, key), name in wanted.items():
        row = rows.get(name)
        if row is None:
            raise ConfigError(f"no configuration secret {name!r} in the secret store "
                              f"(fep keys import {CONFIG_METER} {name})", file=config.source,
                              section=section, key=key)
        changes.setdefault(section, {})[key] = open_sealed(
            master, CONFIG_SECRETS, name, row.sealed).decode()
    return attrs.evolve(config, **{
        section: attrs.evolve(getattr(config, section), **values)
        for section, values in changes.items()
    })


def clear_config_secrets(config: Any) -> list[str]:
    """``[section] key`` of configuration secrets given in clear (discouraged)."""
    return [f"[{section}] {key}" for section, key in CONFIG_SECRET_FIELDS
            if _clear_secret(section, getattr(getattr(config, section), key))]


def _clear_secret(section: str, value: Any) -> bool:
    if not isinstance(value, str) or not value or value.startswith(SECRET_PREFIX):
        return False
    if section == "northbound":
        from urllib.parse import urlsplit

        try:
            return urlsplit(value).password is not None
        except ValueError:
            return False
    return True
