"""One DLMS connection as session steps, sans-IO: the link (wrapper or HDLC) and the client
(association, services) answering ``start()``, ``receive(bytes)`` and ``timeout()`` with the
actions of fep/protocols/actions.py, for the shared session driver to carry out.

A DLMS session is many exchanges on one connection, one at a time: ``request(apdu, what)``
sends an APDU and waits; what comes back is handed to the session as notes (``Opened``,
``Answered``, ``Refused``, ``PushArrived``, ``Downgrade``, ``LinkNoise``, ``Resent``). A silent
step is repeated on a link that can (HDLC) up to ``retries`` times, then the session fails
with a SessionTimeout naming what was awaited.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from fep.errors import FrameError, SessionTimeout
from fep.protocols.actions import Fail, Send, SetTimer, StopTimer
from fep.protocols.dlms.client import DlmsClient, Event, Pushed
from fep.protocols.dlms.client import Send as Continue
from fep.protocols.dlms.errors import DlmsError, DowngradeError
from fep.protocols.dlms.link import Link

# -- notes to the session ----------------------------------------------------------------------


@attrs.frozen
class Opened:
    """The link is open: requests may go."""


@attrs.frozen
class Answered:
    """The client's final event for the request under way."""

    event: Event


@attrs.frozen
class Refused:
    """The meter's answer is an error (DlmsError, FrameError) for what was awaited; the
    connection stays up."""

    error: Exception


@attrs.frozen
class PushArrived:
    """An unsolicited notification during the session."""

    pushed: Pushed


@attrs.frozen
class Downgrade:
    """An unciphered APDU from a meter with keys was refused (a security event); ``push``:
    it was a notification, nothing awaited it."""

    detail: str
    push: bool = False


@attrs.frozen
class LinkNoise:
    """Bytes the link could not decode, dropped."""

    error: FrameError


@attrs.frozen
class Resent:
    """No answer to ``what``: the link repeated its last step (try ``n``)."""

    what: str
    n: int


class DlmsSteps:
    """The steps of one DLMS connection: opens the link, then one exchange at a time."""

    def __init__(self, client: DlmsClient, link: Link, retries: int = 2) -> None:
        self.client = client
        self.link = link
        self.retries = retries
        self.opened = False
        self.awaiting: str | None = None
        self._what = "link"
        self._tries = 0

    @property
    def waiting_for(self) -> str | None:
        return self.awaiting

    def _send(self, chunks: Sequence[bytes]) -> list[object]:
        return [Send(chunk) for chunk in chunks]

    def start(self) -> Sequence[object]:
        opening = self.link.open()
        if not opening:
            self.opened = True
            return [Opened()]
        self._what = self.awaiting = "SNRM"
        return [*self._send(opening), SetTimer()]

    def request(self, apdu: bytes, what: str) -> list[object]:
        """Send ``apdu``; the answer comes as ``Answered`` or ``Refused``."""
        actions = [*self._send(self.link.send(apdu)), SetTimer()]
        self._what = self.awaiting = what
        self._tries = 0
        return actions

    def close(self) -> list[object]:
        """Disconnect the link (HDLC DISC)."""
        self.awaiting = None
        return self._send(self.link.close())

    def receive(self, data: bytes) -> Sequence[object]:
        try:
            apdus, out = self.link.receive(data)
        except FrameError as e:
            return [LinkNoise(e)]
        # A ProtocolError (HDLC link refused) ends the session.
        actions = self._send(out)
        if not self.opened and self.link.is_open():
            self.opened = True
            self.awaiting = None
            actions += [StopTimer(), Opened()]
        for raw in apdus:
            actions += self._apdu(raw)
        return actions

    def _apdu(self, raw: bytes) -> list[object]:
        try:
            event = self.client.receive(raw)
        except (DlmsError, FrameError) as e:
            self.awaiting = None
            notes: list[object] = []
            if isinstance(e, DowngradeError):
                notes.append(Downgrade(str(e)))
            return [*notes, StopTimer(), Refused(e)]
        if isinstance(event, Pushed):
            if event.downgrade:
                return [Downgrade(event.problem or "unciphered notification", push=True)]
            return [PushArrived(event)]
        if isinstance(event, Continue):
            # The client goes on by itself (blocks): the same wait, a fresh timer.
            self._tries = 0
            return [*self._send(self.link.send(event.apdu)), SetTimer()]
        self.awaiting = None
        return [StopTimer(), Answered(event)]

    def timeout(self) -> Sequence[object]:
        again = self.link.timeout()
        if again and self._tries < self.retries:
            self._tries += 1
            return [Resent(self._what, self._tries), *self._send(again), SetTimer()]
        return [Fail(SessionTimeout(f"no answer to {self._what}"))]


__all__ = [
    "Answered",
    "DlmsSteps",
    "Downgrade",
    "LinkNoise",
    "Opened",
    "PushArrived",
    "Refused",
    "Resent",
]
