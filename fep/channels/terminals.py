"""GPRS terminal (DTU) profiles: which settings a terminal model takes and the texts that set
them, by SMS and over its own TCP session (AT pass-through). Sans-IO: profiles are parsed
from ini text (``etc/terminals/*.ini``, docs/channels/terminals.md), requests are checked
and turned into texts and lines here; fep.channels.terminal_session runs the lines over a
session's pipe, fep.collect.terminals runs the command.

A template is text with ``{NAME}`` fields: the settings (``apn``, ``host``, ``port``,
``host2``, ``port2``, ``heartbeat``, ``mode``) in a ``[setting.*]`` section, ``{password}``
and ``{commands}`` in the SMS envelope, ``{password}`` and ``{command}`` in the TCP login and
line. The same template renders a text (fep) and reads it back (the simulated terminal,
``Template.match``).
"""

from __future__ import annotations

import configparser
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fep.errors import ConfigError

# What a terminal-config command may set, in the order the texts carry them.
SETTINGS = ("apn", "host", "port", "host2", "port2", "heartbeat", "mode")
# How the change travels: a text to the terminal's number, or its own TCP session.
VIAS = ("sms", "tcp")
# The meter metadata naming a terminal's profile, and its configuration password (a meter
# secret, fep.vault.METER_SECRETS).
PROFILE_KEY = "terminal"
PASSWORD_KEY = "terminal_password"
MAX_PROFILE_FILE = 64 * 1024
# An answer line longer than this is cut (what a terminal says is kept in the outcome).
MAX_ANSWER = 160

_FIELD = re.compile(r"\{([a-z0-9_]+)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Values a request may give: none may carry a text's separators or line ends.
_VALUES = {
    "apn": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"),
    "host": re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$"),
    "mode": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"),
}
_PASSWORD = re.compile(r"^[\x21-\x7e]{1,32}$")
# What a profile's answers look like when it does not say.
SMS_OK = re.compile(r"^OK")
SMS_REFUSED = re.compile(r"ERR|WRONG|DENIED|FAIL", re.IGNORECASE)
TCP_ENTERED = re.compile(r"^(OK|a)$")
TCP_OK = re.compile(r"^OK$")
TCP_ERROR = re.compile(r"^(ERROR|\+CME ERROR.*)$")


@attrs.frozen
class Template:
    """Text with ``{NAME}`` fields."""

    text: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, allowed: Iterable[str], where: dict[str, str]) -> Template:
        allowed = tuple(allowed)
        fields = tuple(_FIELD.findall(text))
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join('{' + u + '}' for u in unknown)} "
                              f"(allowed: {', '.join(allowed)})", **where)
        if len(set(fields)) != len(fields):
            raise ConfigError("a field appears twice", **where)
        if "{" in _FIELD.sub("", text) or "}" in _FIELD.sub("", text):
            raise ConfigError("a '{' or '}' that is not a field", **where)
        return cls(text, fields)

    def render(self, values: Mapping[str, Any]) -> str:
        return _FIELD.sub(lambda m: str(values[m.group(1)]), self.text)

    def pattern(self) -> re.Pattern[str]:
        parts: list[str] = []
        last = 0
        for m in _FIELD.finditer(self.text):
            parts.append(re.escape(self.text[last:m.start()]))
            parts.append(f"(?P<{m.group(1)}>.*?)")
            last = m.end()
        parts.append(re.escape(self.text[last:]))
        return re.compile("^" + "".join(parts) + "$", re.DOTALL)

    def match(self, text: str) -> dict[str, str] | None:
        """The fields of ``text`` if it is this template filled in (the simulator)."""
        m = self.pattern().match(text)
        return None if m is None else m.groupdict()


@attrs.frozen
class Setting:
    """One command of the model: the settings it sets together (its fields) and its text
    in an SMS and on the TCP session (None: not that way)."""

    name: str
    fields: tuple[str, ...]
    sms: Template | None
    tcp: Template | None


@attrs.frozen
class SmsTexts:
    """How the model takes texts: the envelope (``{password}``, ``{commands}`` joined by
    ``separator``), split into several texts above ``max_length``; whether it answers, and
    what a good answer and a refusal look like."""

    text: Template
    separator: str = ";"
    max_length: int = 160
    reply: bool = True
    ok: re.Pattern[str] = SMS_OK
    refused: re.Pattern[str] = SMS_REFUSED
    reply_timeout: float = 120.0

    def verdict(self, answer: str) -> bool | None:
        """True for a good answer, False for a refusal, None for anything else."""
        if self.refused.search(answer):
            return False
        if self.ok.search(answer):
            return True
        return None


@attrs.frozen
class TcpSession:
    """AT pass-through on the terminal's session: ``enter`` (sent alone after ``guard``
    seconds of silence; empty: the terminal takes configuration lines in-band), what
    answers it (``entered``), the ``login`` line with the password (empty: none), each
    command inside ``line`` (``{command}``, maybe ``{password}``), what means OK and ERROR,
    and ``leave`` (back to transparent mode without a restart, after a refusal)."""

    enter: str = "+++"
    guard: float = 1.0
    entered: re.Pattern[str] = TCP_ENTERED
    login: Template | None = None
    line: Template = Template("{command}", ("command",))
    line_end: str = "\r\n"
    ok: re.Pattern[str] = TCP_OK
    error: re.Pattern[str] = TCP_ERROR
    leave: str = ""
    answer_timeout: float = 10.0


@attrs.frozen
class TerminalProfile:
    """A terminal model: its settings' commands, how it takes texts and TCP configuration,
    its restart (which makes it reconnect to the master station it is now set to)."""

    name: str
    description: str
    settings: tuple[Setting, ...]
    restart_sms: Template | None
    restart_tcp: Template | None
    sms: SmsTexts | None
    tcp: TcpSession | None
    password: bool = True
    modes: tuple[str, ...] = ()
    origin: str = ""

    def setting_for(self, field: str) -> Setting | None:
        return next((s for s in self.settings if field in s.fields), None)

    @property
    def takes(self) -> tuple[str, ...]:
        """The settings this model takes (in the vocabulary's order)."""
        fields = {f for s in self.settings for f in s.fields}
        return tuple(f for f in SETTINGS if f in fields)

    def commands(self, change: TerminalChange, via: str) -> list[str]:
        """The model's commands for ``change`` (the restart last), by ``via``; ConfigError
        naming the parameter when the model cannot take it that way."""
        given = change.values()
        out: list[str] = []
        used: set[str] = set()
        for setting in self.settings:
            if not set(setting.fields) & set(given):
                continue
            missing = [f for f in setting.fields if f not in given]
            if missing:
                raise ConfigError(
                    f"terminal model {self.name} sets {', '.join(setting.fields)} together "
                    f"({setting.name}): give {', '.join(missing)} too", key=missing[0])
            template = setting.sms if via == "sms" else setting.tcp
            if template is None:
                raise ConfigError(f"terminal model {self.name} cannot set "
                                  f"{', '.join(setting.fields)} by {via}",
                                  key=setting.fields[0])
            out.append(template.render(given))
            used.update(setting.fields)
        unknown = [f for f in given if f not in used]
        if unknown:
            raise ConfigError(f"terminal model {self.name} has no setting {unknown[0]} "
                              f"(it takes: {', '.join(self.takes)})", key=unknown[0])
        restart = self.restart_sms if via == "sms" else self.restart_tcp
        if restart is not None:
            out.append(restart.text)
        return out

    def check(self, change: TerminalChange, via: str) -> None:
        """ConfigError when this model cannot take ``change`` by ``via``."""
        if via == "sms" and self.sms is None:
            raise ConfigError(f"terminal model {self.name} takes no configuration texts",
                              key="via")
        if via == "tcp" and self.tcp is None:
            raise ConfigError(f"terminal model {self.name} has no AT pass-through on its "
                              "session", key="via")
        if change.mode is not None and self.modes and change.mode not in self.modes:
            raise ConfigError(f"terminal model {self.name}: mode {change.mode!r} is not one "
                              f"of {', '.join(self.modes)}", key="mode")
        self.commands(change, via)

    def sms_texts(self, change: TerminalChange, password: str) -> list[str]:
        """The texts that carry ``change`` (each in the envelope, with the password)."""
        assert self.sms is not None
        commands = self.commands(change, "sms")
        texts: list[str] = []
        batch: list[str] = []
        for command in commands:
            candidate = [*batch, command]
            text = self.sms.text.render({"password": password,
                                         "commands": self.sms.separator.join(candidate)})
            if batch and len(text) > self.sms.max_length:
                texts.append(self.sms.text.render({"password": password,
                                                   "commands": self.sms.separator.join(batch)}))
                batch = [command]
            else:
                batch = candidate
        if batch:
            texts.append(self.sms.text.render({"password": password,
                                               "commands": self.sms.separator.join(batch)}))
        return texts

    def tcp_lines(self, change: TerminalChange, password: str) -> list[str]:
        """The command lines of ``change`` on the session (restart last), without the
        login and line ends."""
        assert self.tcp is not None
        return [self.tcp.line.render({"command": c, "password": password})
                for c in self.commands(change, "tcp")]


@attrs.frozen
class TerminalChange:
    """What a terminal-config command sets (None: left as it is)."""

    apn: str | None = None
    host: str | None = None
    port: int | None = None
    host2: str | None = None
    port2: int | None = None
    heartbeat: int | None = None
    mode: str | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k in SETTINGS if (v := getattr(self, k)) is not None}

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values().items())


def parse_change(params: Mapping[str, Any]) -> tuple[TerminalChange, str]:
    """A terminal-config request's parameters as (change, via); ConfigError naming the
    parameter that is wrong. Bookkeeping keys of a command (attempts, ...) are ignored."""
    via = str(params.get("via", "sms")).strip().lower()
    if via not in VIAS:
        raise ConfigError(f"via {via!r}: sms or tcp", key="via")
    values: dict[str, Any] = {}
    for key in SETTINGS:
        raw = params.get(key)
        if raw is None or str(raw).strip() == "":
            continue
        text = str(raw).strip()
        if key in ("port", "port2", "heartbeat"):
            try:
                number = int(text)
            except ValueError:
                raise ConfigError(f"{key} {text!r} is not a whole number", key=key) from None
            low, high = (1, 65535) if key != "heartbeat" else (0, 86400)
            if not low <= number <= high:
                raise ConfigError(f"{key} {number}: {low} to {high}", key=key)
            values[key] = number
        else:
            pattern = _VALUES["host" if key.startswith("host") else key]
            if not pattern.match(text):
                raise ConfigError(f"{key} {text!r}: letters, digits, '.', '-' (no spaces or "
                                  "separators)", key=key)
            values[key] = text
    if not values:
        raise ConfigError(f"terminal-config sets nothing: give one or more of "
                          f"{', '.join(f'{s}=' for s in SETTINGS)}", key="params")
    return TerminalChange(**values), via


def check_password(password: str, profile: TerminalProfile) -> None:
    if profile.password and not _PASSWORD.match(password):
        raise ConfigError(f"terminal model {profile.name} needs a configuration password "
                          f"(meter secret {PASSWORD_KEY}: 1 to 32 printable characters, no "
                          "spaces)", key=PASSWORD_KEY)


# -- parsing ------------------------------------------------------------------------------


def _regex(section: configparser.SectionProxy, key: str, default: re.Pattern[str],
           where: dict[str, str]) -> re.Pattern[str]:
    text = section.get(key, "").strip()
    if not text:
        return default
    try:
        return re.compile(text)
    except re.error as e:
        raise ConfigError(f"bad regular expression: {e}", **{**where, "key": key}) from None


def _number(section: configparser.SectionProxy, key: str, default: float,
            where: dict[str, str]) -> float:
    text = section.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number", **{**where, "key": key}) from None
    if value < 0:
        raise ConfigError("must be 0 or more", **{**where, "key": key})
    return value


def _yes(section: configparser.SectionProxy, key: str, default: bool,
         where: dict[str, str]) -> bool:
    text = section.get(key, "").strip().lower()
    if not text:
        return default
    if text in ("yes", "true", "on", "1"):
        return True
    if text in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"{text!r}: yes or no", **{**where, "key": key})


def _unescape(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


_SECTION_KEYS = {
    "terminal": {"description", "password", "modes"},
    "sms": {"text", "separator", "max_length", "reply", "ok", "refused", "reply_timeout"},
    "tcp": {"enter", "guard", "entered", "login", "line", "line_end", "ok", "error", "leave",
            "answer_timeout"},
    "restart": {"sms", "tcp"},
    "setting": {"sms", "tcp"},
}


def parse_profile(text: str, name: str, origin: str = "") -> TerminalProfile:
    """A profile from ini text; ConfigError names the file, section and key."""
    file = origin or f"{name}.ini"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, file)
    except configparser.Error as e:
        raise ConfigError(f"not a terminal profile: {e}".replace("\n", " "),
                          file=file) from None
    if not _NAME.match(name):
        raise ConfigError(f"profile name {name!r}: letters, digits, '_', '.', '-'", file=file)
    for section_name in parser.sections():
        kind = section_name.partition(".")[0] if section_name.startswith("setting.") else \
            section_name
        allowed = _SECTION_KEYS.get(kind)
        if allowed is None:
            raise ConfigError("unknown section (terminal, sms, tcp, restart, setting.NAME)",
                              file=file, section=section_name)
        for key in parser[section_name]:
            if key not in allowed:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(allowed))})",
                                  file=file, section=section_name, key=key)
    if not parser.has_section("terminal"):
        raise ConfigError("no [terminal] section", file=file)
    head = parser["terminal"]
    where = {"file": file, "section": "terminal"}
    password = _yes(head, "password", True, where)
    modes = tuple(m.strip() for m in head.get("modes", "").split(",") if m.strip())
    settings: list[Setting] = []
    seen: set[str] = set()
    for section_name in parser.sections():
        if not section_name.startswith("setting."):
            continue
        section = parser[section_name]
        templates: dict[str, Template | None] = {}
        fields: tuple[str, ...] = ()
        for way in VIAS:
            raw = section.get(way, "").strip()
            if not raw:
                templates[way] = None
                continue
            template = Template.parse(raw, SETTINGS, {"file": file, "section": section_name,
                                                      "key": way})
            if not template.fields:
                raise ConfigError("a setting's text names the setting(s) it sets, e.g. "
                                  "AT+APN={apn}", file=file, section=section_name, key=way)
            if fields and set(template.fields) != set(fields):
                raise ConfigError("sms and tcp must set the same fields", file=file,
                                  section=section_name, key=way)
            fields = template.fields
            templates[way] = template
        if not fields:
            raise ConfigError("a setting needs an sms or a tcp text", file=file,
                              section=section_name)
        twice = seen & set(fields)
        if twice:
            raise ConfigError(f"{', '.join(sorted(twice))} set by two sections", file=file,
                              section=section_name)
        seen.update(fields)
        settings.append(Setting(section_name[len("setting."):], fields, templates["sms"],
                                templates["tcp"]))
    if not settings:
        raise ConfigError("no [setting.NAME] section", file=file)
    sms: SmsTexts | None = None
    if parser.has_section("sms"):
        section = parser["sms"]
        where = {"file": file, "section": "sms"}
        envelope = Template.parse(section.get("text", "{password},{commands}").strip(),
                                  ("password", "commands"), {**where, "key": "text"})
        if "commands" not in envelope.fields or (password and
                                                  "password" not in envelope.fields):
            raise ConfigError("the text carries {commands}" + (
                " and {password}" if password else ""), **{**where, "key": "text"})
        sms = SmsTexts(
            text=envelope,
            separator=_unescape(section.get("separator", ";")),
            max_length=int(_number(section, "max_length", 160, where)),
            reply=_yes(section, "reply", True, where),
            ok=_regex(section, "ok", SMS_OK, where),
            refused=_regex(section, "refused", SMS_REFUSED, where),
            reply_timeout=_number(section, "reply_timeout", 120.0, where),
        )
    tcp: TcpSession | None = None
    if parser.has_section("tcp"):
        section = parser["tcp"]
        where = {"file": file, "section": "tcp"}
        login_text = section.get("login", "").strip()
        login = Template.parse(login_text, ("password",), {**where, "key": "login"}) \
            if login_text else None
        line = Template.parse(section.get("line", "{command}").strip() or "{command}",
                              ("command", "password"), {**where, "key": "line"})
        if "command" not in line.fields:
            raise ConfigError("the line carries {command}", **{**where, "key": "line"})
        if password and login is None and "password" not in line.fields:
            raise ConfigError("a model with a password gives it in login or in line",
                              **{**where, "key": "login"})
        tcp = TcpSession(
            enter=_unescape(section.get("enter", "").strip()),
            guard=_number(section, "guard", 1.0, where),
            entered=_regex(section, "entered", TCP_ENTERED, where),
            login=login,
            line=line,
            line_end=_unescape(section.get("line_end", "\\r\\n").strip() or "\\r\\n"),
            ok=_regex(section, "ok", TCP_OK, where),
            error=_regex(section, "error", TCP_ERROR, where),
            leave=section.get("leave", "").strip(),
            answer_timeout=_number(section, "answer_timeout", 10.0, where),
        )
    if sms is None and tcp is None:
        raise ConfigError("a profile needs [sms] or [tcp] (or both)", file=file)
    restart_sms = restart_tcp = None
    if parser.has_section("restart"):
        section = parser["restart"]
        for way in VIAS:
            raw = section.get(way, "").strip()
            if raw:
                template = Template.parse(raw, (), {"file": file, "section": "restart",
                                                    "key": way})
                if way == "sms":
                    restart_sms = template
                else:
                    restart_tcp = template
    return TerminalProfile(
        name=name,
        description=head.get("description", "").strip(),
        settings=tuple(settings),
        restart_sms=restart_sms,
        restart_tcp=restart_tcp,
        sms=sms,
        tcp=tcp,
        password=password,
        modes=modes,
        origin=file,
    )


def shipped_directory() -> Path:
    """``etc/terminals`` of this source tree (the profiles fep ships)."""
    return Path(__file__).resolve().parents[2] / "etc" / "terminals"


def load_profiles(directories: Iterable[Path | str] = (), *, shipped: bool = True
                  ) -> dict[str, TerminalProfile]:
    """Every ``NAME.ini`` profile of the shipped directory (when ``shipped``) and then of
    ``directories`` (a later one of the same name replaces an earlier one: a utility's own
    version of a shipped profile). ConfigError for a bad file or a missing directory."""
    found: dict[str, TerminalProfile] = {}
    dirs: list[Path] = [shipped_directory()] if shipped else []
    dirs += [Path(d) for d in directories]
    for directory in dirs:
        if not directory.is_dir():
            if shipped and directory == dirs[0]:
                continue
            raise ConfigError(f"terminal profile directory {directory} does not exist",
                              key="terminal_profiles")
        for path in sorted(directory.glob("*.ini")):
            if path.stat().st_size > MAX_PROFILE_FILE:
                raise ConfigError(f"over {MAX_PROFILE_FILE} bytes", file=str(path))
            found[path.stem] = parse_profile(path.read_text(encoding="utf-8"), path.stem,
                                             str(path))
    return found


@functools.cache
def shipped_profiles() -> dict[str, TerminalProfile]:
    """The profiles fep ships (read once)."""
    return load_profiles(())
