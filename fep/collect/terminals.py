"""``terminal-config``: the engine's command that sets a GPRS terminal's (DTU's) APN,
master-station addresses, heartbeat and reporting mode, by SMS or over its own session.

A terminal is the meter-list entry that names its profile (``terminal = generic-at-sms``,
fep.channels.terminals), its number (``sms_number``) and its configuration password (the meter
secret ``terminal_password``). ``via=sms`` sends the profile's texts through the SMS channel
and, when the profile says the terminal answers, waits for its reply from that number;
``via=tcp`` borrows the terminal's GPRS session (the ``gprs:`` route's pipe, as pull jobs do)
and runs the AT pass-through (fep.channels.terminal_session). Requests, approval and audit
are the engine's as for every command (fep.collect.commands); the outcome names the terminal,
the way and its answer. The password is never logged nor put in an outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from fep.channels.terminal_session import TerminalRefused, pass_through
from fep.channels.terminals import (
    PASSWORD_KEY,
    PROFILE_KEY,
    TerminalProfile,
    check_password,
    parse_change,
    shipped_profiles,
)
from fep.collect.sms import SMS_NUMBER_KEY, number_key
from fep.collect.tasks import Outcome
from fep.errors import ChannelError, ConfigError
from fep.model import Meter

log = Logger(namespace="fep.collect.terminals")

ACTION = "terminal-config"


def terminal_of(meter: Meter) -> str | None:
    """The profile name a meter's terminal has (its ``terminal`` metadata), or None."""
    name = str(meter.metadata.get(PROFILE_KEY, "") or "").strip()
    return name or None


def check_request(meter: Meter, params: Mapping[str, Any],
                  profiles: Mapping[str, TerminalProfile] | None = None) -> None:
    """ConfigError naming the parameter when a terminal-config request is wrong for the
    meter's terminal (checked when it is asked, against the shipped profiles; a profile of
    the daemon's own directories is checked when the command runs)."""
    change, via = parse_change(params)
    name = terminal_of(meter)
    if name is None:
        raise ConfigError(f"meter {meter.id} names no terminal profile ({PROFILE_KEY} = ...)",
                          key=PROFILE_KEY)
    profile = (profiles if profiles is not None else shipped_profiles()).get(name)
    if profile is not None:
        profile.check(change, via)
    if via == "sms" and not meter.metadata.get(SMS_NUMBER_KEY):
        raise ConfigError(f"meter {meter.id} has no {SMS_NUMBER_KEY} to text its terminal",
                          key=SMS_NUMBER_KEY)
    if via == "tcp" and not meter.route.startswith("gprs:"):
        raise ConfigError(f"meter {meter.id}: via=tcp needs the terminal's GPRS session (a "
                          f"gprs: route, not {meter.route})", key="via")


class _Waiting:
    def __init__(self, profile: TerminalProfile) -> None:
        self.profile = profile
        self.replies: list[str] = []
        self.settled: Deferred[str] = Deferred()


class TerminalConfigurator:
    """Runs terminal-config commands for the job runner (``run``) and takes the terminals'
    SMS replies (``sms_received``, a message handler of the SMS channel)."""

    def __init__(self, reactor: IReactorTime, profiles: Mapping[str, TerminalProfile],
                 sms: Any = None) -> None:
        self.reactor = reactor
        self.profiles = dict(profiles)
        self.sms = sms  # the SMS channel (send(number, text)), None: no texts
        # Replies awaited, by the terminal's number (number_key).
        self._waiting: dict[str, _Waiting] = {}

    def profile(self, meter: Meter) -> TerminalProfile:
        name = terminal_of(meter)
        if name is None:
            raise ConfigError(f"meter {meter.id} names no terminal profile", key=PROFILE_KEY)
        profile = self.profiles.get(name)
        if profile is None:
            raise ConfigError(f"meter {meter.id}: no terminal profile {name!r} (known: "
                              f"{', '.join(sorted(self.profiles)) or 'none'})",
                              key=PROFILE_KEY)
        return profile

    async def run(self, meter: Meter, params: Mapping[str, Any],
                  endpoint: Callable[[], IStreamClientEndpoint]) -> Outcome:
        """One attempt. ``endpoint`` gives the route's endpoint (only via=tcp opens it)."""
        check_request(meter, params, self.profiles)
        profile = self.profile(meter)
        change, via = parse_change(params)
        profile.check(change, via)
        password = str(meter.metadata.get(PASSWORD_KEY, "") or "")
        check_password(password, profile)
        fields = {"meter": meter.id, "route": meter.route, "terminal": profile.name,
                  "via": via, "change": str(change)}
        log.info("terminal of {meter} ({terminal}): setting {change} by {via}", **fields)
        if via == "sms":
            answer = await self._by_sms(meter, profile, profile.sms_texts(change, password))
            result = (f"terminal {profile.name} at {meter.metadata.get(SMS_NUMBER_KEY)} set "
                      f"{change} by SMS" + (f"; it answered {answer!r}" if answer else ""))
        else:
            assert profile.tcp is not None
            try:
                answers = await pass_through(
                    self.reactor, endpoint(), profile.tcp, password,
                    profile.tcp_lines(change, password), meter.route,
                    restarts=profile.restart_tcp is not None)
            except TerminalRefused as e:
                raise TerminalRefused(f"meter {meter.id}: terminal {profile.name} refused "
                                      f"{change} by tcp ({e.step}): {e.answer}", e.answer,
                                      route=meter.route, step=e.step) from None
            result = (f"terminal {profile.name} on {meter.route} set {change} by tcp; it "
                      f"answered {answers[-1]!r}" + (" to the restart" if profile.restart_tcp
                                                     else ""))
        log.info("terminal of {meter} ({terminal}): {result}", result=result, **fields)
        return Outcome(True, result=result, details={"terminal": profile.name, "via": via,
                                                     **change.values()})

    async def _by_sms(self, meter: Meter, profile: TerminalProfile, texts: list[str]) -> str:
        assert profile.sms is not None
        if self.sms is None:
            raise ConfigError("this node has no SMS channel ([sms] port) for via=sms",
                              key="via")
        number = str(meter.metadata[SMS_NUMBER_KEY])
        key = number_key(number)
        waiting: _Waiting | None = None
        if profile.sms.reply:
            if key in self._waiting:
                raise ChannelError(f"a configuration of the terminal at {number} is already "
                                   "waiting for its answer", route=meter.route)
            waiting = self._waiting[key] = _Waiting(profile)
        try:
            for text in texts:
                await self.sms.send(number, text)
            if waiting is None:
                return ""
            timer = self.reactor.callLater(profile.sms.reply_timeout, waiting.settled.cancel)
            try:
                answer = await waiting.settled
            except Exception:
                heard = " / ".join(waiting.replies)
                raise ChannelError(
                    f"meter {meter.id}: terminal {profile.name} at {number} did not answer "
                    f"within {profile.sms.reply_timeout:g} s" + (
                        f" (it said {heard!r})" if heard else ""), route=meter.route) from None
            finally:
                if timer.active():
                    timer.cancel()
            if profile.sms.verdict(answer) is False:
                raise TerminalRefused(f"meter {meter.id}: terminal {profile.name} at {number} "
                                      f"refused the configuration: {answer!r}", answer,
                                      route=meter.route)
            return answer
        finally:
            if waiting is not None and self._waiting.get(key) is waiting:
                del self._waiting[key]

    def sms_received(self, message: Any) -> None:
        """A text from a terminal a configuration waits on settles it (a good answer or a
        refusal; anything else is kept and shown if no verdict comes)."""
        waiting = self._waiting.get(number_key(message.sender))
        if waiting is None or waiting.settled.called:
            return
        text = str(message.text).strip()[:160]
        assert waiting.profile.sms is not None
        if waiting.profile.sms.verdict(text) is None:
            if len(waiting.replies) < 4:
                waiting.replies.append(text)
            return
        waiting.settled.callback(text)
