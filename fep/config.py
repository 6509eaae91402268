"""The daemon's configuration: an ini file read into the subsystems' typed, frozen settings.

Each subsystem declares its own section (fep.options.Section: its options with type, default
and meaning, and the function that turns them into its settings); this module only reads the
file and applies the declarations listed in ``SECTIONS``. Values are typed once, here at load;
`etc/fep.ini` documents the same options for people. Any error names the file, the section and
the key.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fep.analysis.daemon import ANALYSIS, AnalysisSection
from fep.channels.modem.settings import MODEMS, ModemsSection
from fep.channels.settings import (
    GPRS,
    LISTENER_LIMITS,
    PUSH,
    GprsSection,
    ListenersSection,
    PushSection,
)
from fep.collect.settings import COLLECT, CollectSection
from fep.collect.sms import SMS, SmsSection
from fep.config_secrets import SECRETS, SecretsSection
from fep.errors import ConfigError
from fep.node import FEP, LOG, FepSection, LogSection
from fep.operator.settings import (
    ALARMS,
    CONTROL,
    HTTP,
    MANHOLE,
    NORTHBOUND,
    AlarmsSection,
    ControlSection,
    HttpSection,
    ManholeSection,
    NorthboundSection,
)
from fep.options import Option, Section
from fep.protocols.dlms.identity import DLMS, DlmsSection
from fep.store.settings import SPOOL, STORE, SpoolSection, StoreSection

# Every section of the ini file, each declared by the subsystem that owns it (the module it
# is imported from above). Config has one attribute per section, of the same name.
SECTIONS: tuple[Section, ...] = (
    FEP, STORE, SPOOL, COLLECT, PUSH, DLMS, MODEMS, GPRS, CONTROL, SMS, HTTP, MANHOLE, ALARMS,
    NORTHBOUND, SECRETS, LISTENER_LIMITS, LOG, ANALYSIS,
)
# section -> key -> Option: every option's one declaration.
SCHEMA: Mapping[str, Mapping[str, Option]] = {s.name: s.options for s in SECTIONS}
REQUIRED_SECTIONS = tuple(s.name for s in SECTIONS if s.required)


@attrs.frozen
class Config:
    """The whole, validated configuration of one fep daemon."""

    fep: FepSection
    store: StoreSection
    spool: SpoolSection
    collect: CollectSection
    push: PushSection
    dlms: DlmsSection
    log: LogSection
    modems: ModemsSection
    gprs: GprsSection
    control: ControlSection
    sms: SmsSection
    http: HttpSection
    manhole: ManholeSection
    alarms: AlarmsSection
    northbound: NorthboundSection
    secrets: SecretsSection
    listeners: ListenersSection
    analysis: AnalysisSection
    source: str = "<defaults>"

    @property
    def spool_directory(self) -> Path:
        return Path(self.spool.directory or Path(self.fep.data_dir) / "spool")

    @property
    def firmware_directory(self) -> Path:
        return Path(self.collect.firmware_dir or Path(self.fep.data_dir) / "firmware")

    @property
    def master_key_spec(self) -> str:
        """Where the secret store's master key is: ``[secrets] master_key`` or the default
        file under the data directory."""
        from fep.vault import master_key_spec

        return master_key_spec(self.secrets.master_key, self.fep.data_dir)

    @property
    def control_socket(self) -> Path:
        return Path(self.control.socket or Path(self.fep.data_dir) / "control.sock")


def _sections(parser: configparser.ConfigParser | None, file: str | None) -> dict[str, Any]:
    """Every declared section's settings: from the file where it has the section, else every
    option at its default."""
    return {
        section.name: section.read(
            parser.items(section.name) if parser is not None and
            parser.has_section(section.name) else None, file)
        for section in SECTIONS
    }


def parse_config(text: str, file: str = "<string>") -> Config:
    """Read and validate ini text; ``file`` names it in errors."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, source=file)
    except configparser.Error as e:
        raise ConfigError(f"not a valid ini file: {e}", file=file) from None
    for name in parser.sections():
        if name not in SCHEMA:
            known = ", ".join(SCHEMA)
            raise ConfigError(f"unknown section (known sections: {known})", file=file,
                              section=name)
    for name in REQUIRED_SECTIONS:
        if not parser.has_section(name):
            raise ConfigError("missing section", file=file, section=name)
    return Config(source=file, **_sections(parser, file))


def load_config(path: str | Path) -> Config:
    """Read and validate the ini file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    return parse_config(text, str(path))


def default_config() -> Config:
    """Every option at its default (for the command line without a config file)."""
    return Config(**_sections(None, None))
