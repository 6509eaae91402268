"""A replay modem: a real modem model's recorded answers, served on a pty.

A script under tests/fixtures/modems/ (one per model, its source named in its header) gives
the answers the model was recorded giving (``> command`` then ``< line``s) and its recorded
behaviours (``@key value``). The replay answers a recorded command with the recorded lines,
verbatim; everything else (the 27.005 SMS dialogue the recordings do not cover per model:
storing, reading, sending) is answered by fep's GSM modem emulator underneath, so a text can
really be received and sent.

Behaviours:

- ``@unknown LINE``: the final line the model gives for a command it does not know
  (Huawei E1752: ``COMMAND NOT SUPPORT``) instead of ``ERROR``.
- ``@cpin-final no``: ``AT+CPIN?`` is answered without a final result code (Wavecom).
- ``@pin DIGITS`` and ``@pin-first yes``: the SIM is locked; with pin-first every command
  before the PIN is refused with ``+CME ERROR: 11`` (Qualcomm M6280, ZTE K3565-Z).
- ``@sim-busy COMMAND COUNT``: the first COUNT times, COMMAND is refused with
  ``+CME ERROR: 14`` (SIM busy).
- ``@busy-after COMMAND COUNT``: the COUNT commands after COMMAND are refused with
  ``+CME ERROR: 515`` (Wavecom after ``AT+CFUN=1``).
- ``@radio off``: ``AT+CFUN?`` says 0 until ``AT+CFUN=1``.
- ``@csmp-clears-smsc yes``: ``AT+CSMP=`` forgets the service centre number.
- ``@echo stuck``: ``ATE0`` does not turn the echo off.
- ``@cmgr-without-status yes``: PDU-mode ``+CMGR:`` answers leave out <stat> (ZTE).
- ``@urc-in-answer PREFIX LINE``: an unsolicited LINE arrives inside the answer of commands
  starting with PREFIX, between its information lines and its final result code.
- ``@cpms-checked yes``: ``AT+CPMS=`` with memories or more parameters than the recorded
  ``AT+CPMS=?`` offers is refused with ``ERROR`` (as the recordings show for Wavecom).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from fep.sim.gsm_modem import GsmModemEmulator

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "modems"


@attrs.frozen
class ModemScript:
    name: str
    source: str
    answers: dict[str, tuple[str, ...]]
    behaviours: dict[str, list[str]]

    def get(self, key: str, default: str = "") -> str:
        values = self.behaviours.get(key)
        return values[-1] if values else default

    def flag(self, key: str) -> bool:
        return self.get(key).lower() in ("yes", "stuck", "off", "no-final")


def load_script(name: str) -> ModemScript:
    """tests/fixtures/modems/NAME.txt."""
    path = FIXTURES / f"{name}.txt"
    answers: dict[str, tuple[str, ...]] = {}
    behaviours: dict[str, list[str]] = {}
    title = source = ""
    command: str | None = None
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("# model:"):
            title = raw[8:].strip()
        elif raw.startswith("# source:"):
            source = raw[9:].strip()
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw.startswith("> "):
            if command is not None:
                answers[command] = tuple(lines)
            command, lines = raw[2:].strip().upper(), []
        elif raw.startswith("< "):
            if command is None:
                raise ValueError(f"{path}: answer line before any command: {raw!r}")
            lines.append(raw[2:])
        elif raw.startswith("@"):
            key, _, value = raw[1:].partition(" ")
            behaviours.setdefault(key.strip(), []).append(value.strip())
        else:
            raise ValueError(f"{path}: not a script line: {raw!r}")
    if command is not None:
        answers[command] = tuple(lines)
    if not title or not source:
        raise ValueError(f"{path}: needs '# model:' and '# source:' lines")
    return ModemScript(title, source, answers, behaviours)


class ReplayModem(GsmModemEmulator):
    """One recorded model (see the module docstring); ``emulator`` knobs still work."""

    def __init__(self, script: ModemScript, number: str, **kwargs: Any) -> None:
        self.script = script
        self._stuck_echo = script.get("echo") == "stuck"
        self._echo = True
        pin = script.get("pin") or None
        super().__init__(number, pin=pin, **kwargs)
        self.pin_first = script.flag("pin-first")
        self.unknown_word = script.get("unknown")
        self.cpin_final = script.get("cpin-final", "yes") != "no"
        self.csmp_clears_smsc = script.flag("csmp-clears-smsc")
        self.cmgr_without_status = script.flag("cmgr-without-status")
        self.cpms_checked = script.flag("cpms-checked")
        self.sim_busy: dict[str, int] = {}
        for value in script.behaviours.get("sim-busy", []):
            command, _, count = value.rpartition(" ")
            self.sim_busy[command.strip().upper()] = int(count)
        self.busy_after: dict[str, int] = {}
        for value in script.behaviours.get("busy-after", []):
            command, _, count = value.rpartition(" ")
            self.busy_after[command.strip().upper()] = int(count)
        self.urc_in_answer: list[tuple[str, str]] = []
        for value in script.behaviours.get("urc-in-answer", []):
            prefix, _, line = value.partition(" ")
            self.urc_in_answer.append((prefix.upper(), line.strip()))
        self.cfun = 0 if script.get("radio") == "off" else 1
        self._busy_left = 0
        self._current = ""
        # What the replay refused or injected, for tests.
        self.refused: list[str] = []
        self.injected: list[str] = []

    # Echo that ATE0 cannot turn off.
    @property  # type: ignore[override]
    def echo(self) -> bool:
        return self._echo or self._stuck_echo

    @echo.setter
    def echo(self, value: bool) -> None:
        self._echo = value

    def reset(self) -> None:
        cfun = getattr(self, "cfun", 1)
        super().reset()
        self.cfun = cfun

    def _answer(self, lines: tuple[str, ...] | list[str]) -> None:
        self._write(b"".join(f"\r\n{line}\r\n".encode("latin-1") for line in lines))

    def _refuse(self, line: str, answer: str) -> None:
        self.refused.append(line)
        self._answer([answer])

    def _line(self, raw: str) -> None:
        line = raw.strip()
        if not line or line[:2].upper() != "AT":
            super()._line(raw)
            return
        key = line.upper()
        self._current = key
        if self.pin_first and not self.pin_ok and not key.startswith("AT+CPIN"):
            self.commands.append(line)
            self._refuse(line, "+CME ERROR: 11")
            return
        if self._busy_left > 0:
            self._busy_left -= 1
            self.commands.append(line)
            self._refuse(line, "+CME ERROR: 515")
            return
        if self.sim_busy.get(key, 0) > 0:
            self.sim_busy[key] -= 1
            self.commands.append(line)
            self._refuse(line, "+CME ERROR: 14")
            return
        self._busy_left = self.busy_after.get(key, 0)
        if key == "AT+CPIN?" and key not in self.script.answers:
            self.commands.append(line)
            status = "READY" if self.pin_ok else "SIM PIN"
            self._answer([f"+CPIN: {status}"] + (["OK"] if self.cpin_final else []))
            return
        if key == "AT+CFUN=1":
            self.cfun = 1
        if key.startswith("AT+CSMP=") and self.csmp_clears_smsc:
            self.csca = None
        checked = self.cpms_checked and key.startswith("AT+CPMS=") and key != "AT+CPMS=?"
        if checked and not self._memories_offered(key[8:]):
            self.commands.append(line)
            self._refuse(line, "ERROR")
            return
        if key in self.script.answers:
            self.commands.append(line)
            answer = list(self.script.answers[key])
            for prefix, urc in self.urc_in_answer:
                if key.startswith(prefix) and len(answer) > 1:
                    self.injected.append(urc)
                    answer.insert(len(answer) - 1, urc)
            self._answer(answer)
            return
        super()._line(raw)

    def _memories_offered(self, arg: str) -> bool:
        offered = self.script.answers.get("AT+CPMS=?", ())
        text = " ".join(offered)
        value = text.partition(":")[2].strip()
        if value.startswith("((") and value.endswith("))"):
            value = value[1:-1]
        groups = [re.findall(r'"([^"]*)"', g) for g in re.findall(r"\(([^()]*)\)", value)]
        wanted = [w.strip().strip('"').upper() for w in arg.split(",")]
        if len(wanted) > len(groups):
            return False
        return all(
            not w or w in [g.upper() for g in group]
            for w, group in zip(wanted, groups, strict=False)
        )

    def _result(self, word: str, numeric: int) -> bytes:
        if word == "ERROR" and self.unknown_word and self.verbose:
            return f"\r\n{self.unknown_word}\r\n".encode("latin-1")
        return super()._result(word, numeric)

    def _info(self, lines: list[str]) -> bytes:
        data = super()._info(lines)
        for prefix, urc in self.urc_in_answer:
            if lines and self._current.startswith(prefix):
                self.injected.append(urc)
                data += f"\r\n{urc}\r\n".encode("latin-1")
        return data

    def _cmd_cfun(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?":
            lines.append(f"+CFUN: {self.cfun}")
            return
        super()._cmd_cfun(op, arg, lines)

    def _show(self, slot: Any, index: int | None) -> list[str]:
        lines = super()._show(slot, index)
        if self.cmgr_without_status and not self.cmgf and index is None and lines:
            head = lines[0]
            if head.upper().startswith("+CMGR:"):
                params = head[6:].split(",")
                lines[0] = "+CMGR: ," + ",".join(params[1:])
        return lines


MODELS = (
    "huawei_k3715",
    "huawei_e1752",
    "wavecom_multiband",
    "qualcomm_m6280",
    "zte_k3565z",
    "siemens_mc35i",
)
SEND_ONLY = ("nokia_n79",)
