"""etc/vee.ini: the channel analysed, the rule sets per meter group, estimation and the loss
band of the balance.

``[vee]`` names the channel and the estimation limits; ``[rules:default]`` the rule set of
every meter; ``[rules:GROUP]`` overrides some of its keys for the meters whose ``group``
(the meter list's column, comma-separated groups allowed) names GROUP; the first group of a
meter that has a section wins. ``[balance]`` holds the loss band (``[balance:AREA]``
overrides it for one area). Every error is a ConfigError naming the file, section and key.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

from fep.analysis.balance import Band
from fep.analysis.load import VoltageLimits
from fep.errors import ConfigError
from fep.model import Meter, ObisCode

RULE_NAMES = ("missing", "limits", "spike", "history", "zero", "reverse", "register",
              "duplicates", "rollover", "status", "clock", "meter-change")


@attrs.frozen
class RuleSet:
    """Which rules run for a meter and their parameters (energy in the channel's unit)."""

    name: str = "default"
    rules: frozenset[str] = frozenset(RULE_NAMES)
    high: Decimal | None = None
    low: Decimal | None = Decimal(0)
    spike_factor: Decimal = Decimal(10)
    spike_floor: Decimal = Decimal(0)
    history_high: Decimal = Decimal(3)
    history_low: Decimal = Decimal("0.2")
    zero_days: int = 3
    register_tolerance: Decimal = Decimal("0.005")
    register_tolerance_abs: Decimal = Decimal(0)
    # A meter clock off (or set) by more than this makes its intervals suspect.
    clock_tolerance: timedelta = timedelta(seconds=60)


@attrs.frozen
class VeeSettings:
    channel: ObisCode = attrs.field(factory=lambda: ObisCode(1, 0, 1, 29, 0))
    register: ObisCode = attrs.field(factory=lambda: ObisCode(1, 0, 1, 8, 0))
    # Where meters report their serial number (device ID 1): a new one with a register
    # reset is a meter change.
    serial: ObisCode = attrs.field(factory=lambda: ObisCode(0, 0, 96, 1, 0))
    period: timedelta = timedelta(minutes=15)
    modulus: Decimal | None = None
    history_days: int = 14
    similar_days: int = 4
    max_interpolate: int = 4
    rule_sets: Mapping[str, RuleSet] = attrs.field(factory=lambda: {"default": RuleSet()})
    band: Band = attrs.field(factory=Band)
    area_bands: Mapping[str, Band] = attrs.field(factory=dict)
    # [load]: the channel's energy unit as kW per unit per hour (Wh: 0.001, kWh: 1) and the
    # power factor taking active power to apparent power for transformer loading.
    load_kw: Decimal = Decimal("0.001")
    power_factor: Decimal = Decimal(1)
    # [load]: the meters' own per-phase channels (the phase from OBIS C: 21-40 L1, 41-60 L2,
    # 61-80 L3) and the voltage band.
    voltage_channels: tuple[ObisCode, ...] = attrs.field(factory=lambda: _phase_codes(32))
    current_channels: tuple[ObisCode, ...] = attrs.field(factory=lambda: _phase_codes(31))
    power_channels: tuple[ObisCode, ...] = attrs.field(factory=lambda: _phase_codes(21))
    voltage_limits: VoltageLimits = attrs.field(factory=VoltageLimits)

    def rule_set(self, meter: Meter | None) -> RuleSet:
        groups = [] if meter is None else [
            g.strip() for g in meter.metadata.get("group", "").split(",") if g.strip()]
        for group in groups:
            if group in self.rule_sets:
                return self.rule_sets[group]
        return self.rule_sets["default"]

    def band_for(self, area: str) -> Band:
        return self.area_bands.get(area, self.band)


def _phase_codes(c: int) -> tuple[ObisCode, ...]:
    """The instantaneous-value channels (D = 7) of L1, L2 and L3 of the L1 quantity ``c``."""
    return tuple(ObisCode(1, 0, c + n, 7, 0) for n in (0, 20, 40))


def _phase_channels(l1: tuple[int, ...]) -> Any:
    def parse_codes(text: str) -> tuple[ObisCode, ...]:
        codes = tuple(ObisCode.parse(t.strip()) for t in text.split(",") if t.strip())
        for code in codes:
            if not 21 <= code.c <= 80 or (code.c - 1) % 20 + 1 not in l1:
                raise ValueError(f"{code} is not a per-phase channel of this quantity "
                                 f"(OBIS C {', '.join(str(c) for c in l1)} for L1, +20 for "
                                 "L2, +40 for L3)")
        return codes
    return parse_codes


def _volts(text: str) -> Decimal:
    value = _decimal(text.strip().removesuffix("V").strip())
    if value <= 0:
        raise ValueError(f"a nominal voltage is above 0: {text!r}")
    return value


def _band_rate(text: str) -> Decimal:
    value = _rate(text)
    if not 0 <= value < 100:
        raise ValueError(f"a voltage band is 0 to 100 %: {text!r}")
    return value


def _decimal(text: str) -> Decimal:
    text = text.strip()
    percent = text.endswith("%")
    try:
        value = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    return value / 100 if percent else value


def _rate(text: str) -> Decimal:
    """A loss rate in %, the unit of `Band`: ``8`` and ``8 %`` are both 8 % (not a share:
    ``8 %`` read as the share 0.08 would make a band of 0.08 %)."""
    return _decimal(text.strip().rstrip("%"))


def _optional_decimal(text: str) -> Decimal | None:
    return None if text.strip().lower() in ("", "none", "off") else _decimal(text)


def _duration(text: str) -> timedelta:
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return timedelta(seconds=int(text[:-1]) * units[text[-1]])
    return timedelta(seconds=int(text))


def _tolerance(text: str) -> timedelta:
    value = _duration(text)
    if value < timedelta(0):
        raise ValueError(f"a tolerance is not negative: {text!r}")
    return value


def _rules(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(RULE_NAMES))
    if unknown:
        raise ValueError(f"unknown rule(s) {', '.join(unknown)} (known: {', '.join(RULE_NAMES)})")
    return names


_RULE_KEYS: Mapping[str, Any] = {
    "rules": _rules, "high": _optional_decimal, "low": _optional_decimal,
    "spike_factor": _decimal, "spike_floor": _decimal, "history_high": _decimal,
    "history_low": _decimal, "zero_days": int, "register_tolerance": _decimal,
    "register_tolerance_abs": _decimal, "clock_tolerance": _tolerance,
}
def _energy_unit(text: str) -> Decimal:
    units = {"wh": Decimal("0.001"), "kwh": Decimal(1), "mwh": Decimal(1000)}
    try:
        return units[text.strip().lower()]
    except KeyError:
        raise ValueError(f"not an energy unit (Wh, kWh, MWh): {text!r}") from None


def _power_factor(text: str) -> Decimal:
    value = _decimal(text)
    if not 0 < value <= 1:
        raise ValueError(f"a power factor is above 0 and at most 1: {text!r}")
    return value


_LOAD_KEYS: Mapping[str, Any] = {
    "unit": _energy_unit, "power_factor": _power_factor,
    "voltage": _phase_channels((12,)), "currents": _phase_channels((11,)),
    "powers": _phase_channels((1, 2, 9, 10)),
    "nominal_voltage": _volts, "over_voltage": _band_rate, "under_voltage": _band_rate,
}
_VEE_KEYS: Mapping[str, Any] = {
    "channel": ObisCode.parse, "register": ObisCode.parse, "serial": ObisCode.parse,
    "period": _duration,
    "modulus": _optional_decimal, "history_days": int, "similar_days": int,
    "max_interpolate": int,
}


def _typed(keys: Mapping[str, Any], section: configparser.SectionProxy, file: str
           ) -> dict[str, Any]:
    out = {}
    for key, text in section.items():
        if key not in keys:
            raise ConfigError(f"unknown key (known: {', '.join(keys)})", file=file,
                              section=section.name, key=key)
        try:
            out[key] = keys[key](text)
        except ValueError as e:
            raise ConfigError(str(e), file=file, section=section.name, key=key) from None
    return out


def parse(text: str, file: str = "<vee.ini>") -> VeeSettings:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None,
                                       default_section="\x00none")
    try:
        parser.read_string(text, source=file)
    except configparser.Error as e:
        raise ConfigError(str(e).splitlines()[0], file=file) from None
    vee = _typed(_VEE_KEYS, parser["vee"], file) if parser.has_section("vee") else {}
    default = attrs.evolve(RuleSet(), **_typed(
        _RULE_KEYS, parser["rules:default"], file)) if parser.has_section(
        "rules:default") else RuleSet()
    sets = {"default": default}
    bands: dict[str, Band] = {}
    band = Band()
    load_keys: dict[str, Any] = {}
    for name in parser.sections():
        if name.startswith("rules:") and name != "rules:default":
            group = name.partition(":")[2]
            sets[group] = attrs.evolve(default, name=group, **_typed(_RULE_KEYS, parser[name],
                                                                     file))
        elif name == "balance" or name.startswith("balance:"):
            values = _typed({"low": _rate, "high": _rate}, parser[name], file)
            if name == "balance":
                band = Band(**values)
            else:
                bands[name.partition(":")[2]] = Band(**values)
        elif name == "load":
            values = _typed(_LOAD_KEYS, parser[name], file)
            load_keys = {"load_kw": values.get("unit", Decimal("0.001")),
                         "power_factor": values.get("power_factor", Decimal(1))}
            for key, field in (("voltage", "voltage_channels"),
                               ("currents", "current_channels"),
                               ("powers", "power_channels")):
                if key in values:
                    load_keys[field] = values[key]
            load_keys["voltage_limits"] = VoltageLimits(
                values.get("nominal_voltage", Decimal(230)),
                values.get("over_voltage", Decimal(10)),
                values.get("under_voltage", Decimal(10)))
        elif name not in ("vee", "rules:default"):
            raise ConfigError("unknown section (vee, rules:NAME, balance, balance:AREA, load)",
                              file=file, section=name)
    bands = {area: attrs.evolve(band, **{k: getattr(b, k) for k in ("low", "high")
                                         if parser.has_option(f"balance:{area}", k)})
             for area, b in bands.items()}
    return VeeSettings(**vee, rule_sets=sets, band=band, area_bands=bands, **load_keys)


def load(path: str | Path | None) -> VeeSettings:
    """The settings of a vee.ini file, or the defaults when no file is given."""
    if path is None:
        return VeeSettings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    return parse(text, str(path))

