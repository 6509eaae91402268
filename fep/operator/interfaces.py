"""The operator tier's plug points: what the console, the API and the alarms need from parts
other branches of fep provide (live channel sessions, the task scheduler, the SMS channel).

Each is optional in :class:`fep.operator.context.OperatorContext`; until one is wired in, the
operator tier says so (an API answer of 503, a console line) instead of guessing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from zope.interface import Attribute, Interface

# The collection engine provides it, the operator tier uses it: declared below both.
from fep.interfaces import IScheduler as IScheduler

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


@attrs.frozen
class SessionInfo:
    """One meter session open now: a poll under way or a live inbound (GPRS) connection."""

    meter: str | None
    route: str
    protocol: str | None
    started: datetime
    direction: str = "poll"  # poll | inbound
    remote: str | None = None
    # What the channel knows besides (a GPRS session's modem identity, bytes, frames...).
    details: dict[str, Any] | None = attrs.field(default=None, eq=False, hash=False)

    @property
    def channel(self) -> str:
        """The kind of channel, from the route's scheme (``tcp``, ``serial``, ``gprs``...)."""
        return self.route.split(":", 1)[0] if ":" in self.route else self.route

    def as_dict(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "route": self.route,
            "channel": self.channel,
            "protocol": self.protocol,
            "started": self.started.isoformat(),
            "direction": self.direction,
            "remote": self.remote,
            **({"details": self.details} if self.details else {}),
        }

    @classmethod
    def of(cls, session: Any) -> SessionInfo:
        """This form of a registry's session snapshot: ours as it is; the GPRS channel's
        (``meter``, ``since``, ``peer``, ``listener``, ``as_dict()``) as an inbound session."""
        if isinstance(session, cls):
            return session
        details = session.as_dict() if hasattr(session, "as_dict") else None
        return cls(
            meter=getattr(session, "meter", None),
            route=f"gprs:{getattr(session, 'listener', '')}",
            protocol=getattr(session, "protocol", None),
            started=getattr(session, "since", None) or session.started,
            direction="inbound",
            remote=getattr(session, "peer", None),
            details=details,
        )


class ISessionRegistry(Interface):
    """Who is connected now (the channels branch's GPRS SessionRegistry provides this)."""

    def sessions() -> list[Any]:
        """The sessions open now: SessionInfo, or snapshots SessionInfo.of() understands
        (the GPRS channel's)."""


class ISmsSender(Interface):
    """Sends a text message (the SMS channel provides this; its ``send`` also takes
    keyword options, which the alarms do not use)."""

    route = Attribute("What carries the message, for logs (e.g. the modem's route).")

    def send(number: str, text: str) -> Deferred[None]:
        """Send ``text`` to ``number``; fires once the modem accepted it."""
