"""Declarations of configuration options: each subsystem declares its ini section here.

A section is declared once, by the subsystem that owns it (``Section``: its name, its options
with type, default and meaning, and the function that turns the typed values into the
subsystem's frozen settings). ``fep.config`` only reads the ini file and applies the
declarations: every value is typed once, at load, and every error is a ``ConfigError`` naming
the file, the section and the key. The value parsers every section shares are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from fep.errors import ConfigError

T = TypeVar("T")


@attrs.frozen
class Option:
    """One option of the ini file: ``type`` turns its text into its value (ValueError when the
    text is wrong), ``default`` is the value etc/fep.ini shows (text, typed like a value read
    from the file, or already a number or a yes/no), ``doc`` what it means."""

    type: Callable[[str], Any]  # may raise ValueError, UnicodeError or ConfigError
    default: Any
    doc: str

    @property
    def expected(self) -> str:
        """What a value must look like, for errors."""
        return str(getattr(self.type, "expected", "a valid value"))

    def value(self, text: str) -> Any:
        return self.type(text)

    def default_value(self) -> Any:
        return self.type(self.default) if isinstance(self.default, str) else self.default


@attrs.frozen
class Section:
    """One ini section as its owning subsystem declares it: ``build`` takes every option's
    typed value by keyword and returns the subsystem's frozen settings, raising ConfigError
    naming the key for values that only make sense together."""

    name: str
    options: Mapping[str, Option]
    build: Callable[..., Any]
    required: bool = False

    def read(self, items: Iterable[tuple[str, str]] | None, file: str | None = None) -> Any:
        """The settings from the section's ``(key, text)`` items (None: all defaults)."""
        values: dict[str, Any] = {}
        for key, option in self.options.items():
            try:
                values[key] = option.default_value()
            except ValueError as e:  # a declaration error: its default does not parse
                raise ConfigError(f"bad default {option.default!r} ({e})", section=self.name,
                                  key=key) from None
        for key, raw in items or ():
            declared = self.options.get(key)
            if declared is None:
                known = ", ".join(sorted(self.options))
                raise ConfigError(f"unknown key (known keys: {known})", file=file,
                                  section=self.name, key=key)
            try:
                values[key] = declared.value(raw)
            except (ValueError, UnicodeError, ConfigError) as e:
                detail = e.message if isinstance(e, ConfigError) else str(e)
                raise ConfigError(f"expected {declared.expected}, got {raw!r} ({detail})",
                                  file=file, section=self.name, key=key) from None
        try:
            return self.build(**values)
        except ConfigError as e:
            raise ConfigError(e.message, file=file, section=self.name, key=e.key) from None


def expects(description: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Names what a parser takes (``expected ...`` in errors)."""

    def name(parse: Callable[[str], T]) -> Callable[[str], T]:
        parse.expected = description  # type: ignore[attr-defined]
        return parse

    return name


@expects("yes/no")
def yes_no(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes/no, got {text!r}")


@expects("text")
def text(value: str) -> str:
    return value.strip()


@expects("a positive number")
def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


@expects("a positive whole number")
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive whole number, got {text!r}")
    return value


@expects("a number >= 0")
def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


@expects("a whole number >= 0")
def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


@expects("a TCP port (0: off)")
def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a TCP port 0..65535 (0: off), got {text!r}")
    return value


def optional(kind: Callable[[str], T]) -> Callable[[str], T | None]:
    """``kind``, or None for an empty value (an override left to the general value)."""

    def parse(text: str) -> T | None:
        return kind(text) if text.strip() else None

    parse.__name__ = f"optional_{getattr(kind, '__name__', 'value')}"
    parse.expected = f"{getattr(kind, 'expected', 'a valid value')}, or empty"  # type: ignore[attr-defined]
    return parse


def choice(*choices: str) -> Callable[[str], str]:
    """One of ``choices`` (case ignored)."""

    @expects(" or ".join(choices))
    def choose(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return choose


@expects("items separated by spaces or commas")
def words(text: str) -> tuple[str, ...]:
    """Items separated by spaces or commas."""
    return tuple(text.replace(",", " ").split())
