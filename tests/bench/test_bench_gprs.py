"""The idle-GPRS-sessions bench row runs (few sessions here; `make bench` holds 15,000)."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial import unittest

from fep.bench_gprs import idle_sessions


class IdleSessionsBenchTests(unittest.TestCase):
    async def test_idle_sessions_are_attached_and_hold_no_reactor_call(self) -> None:
        idle = await idle_sessions(reactor, sessions=50, idle_seconds=0.01)  # type: ignore[arg-type]
        self.assertEqual((idle.sessions, idle.state, idle.delayed_calls), (50, "attached", 0))
        self.assertGreater(idle.bytes_per_session, 0)
        # Every session gone, the channel holds no reactor call (trial checks none is left).
