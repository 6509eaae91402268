"""Emulated modems on socat pty pairs for the dial-up tests: the Hayes emulator serves one end
of each pair, fep's ModemPool opens the other end as a ``serial:`` route."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from fep.channels.modem.dialup import DialSettings, RetryPolicy
from fep.channels.modem.line import IModemControl
from fep.channels.modem.pool import LineSpec, ModemPool
from fep.sim.hayes import EmulatedModemControl, Exchange, HayesModem, serve_pty
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor

# Short enough for quick tests, long enough that a loaded machine keeps the order of things.
RING = 0.05
MODEM_GUARD = 0.05
FEP_GUARD = 0.1


async def emulated_pool(
    case: unittest.TestCase,
    exchange: Exchange,
    count: int,
    *,
    dial: DialSettings | None = None,
    policy: RetryPolicy | None = None,
    store: Any = None,
    dtr: bool = True,
    models: Sequence[str] | None = None,
    on_incoming: Any = None,
) -> tuple[ModemPool, list[HayesModem]]:
    """``count`` emulated modems (m1, m2, ...) behind a started ModemPool; stopped (ports
    closed, socat ended) when the test ends. ``dtr=False`` gives the pool no DTR to drop."""
    modems: list[HayesModem] = []
    specs: list[LineSpec] = []
    for i in range(count):
        a, b = await socat_pty_pair(case)
        modem = HayesModem(exchange, f"m{i + 1}", guard=MODEM_GUARD)
        port = serve_pty(reactor, a, modem)
        case.addCleanup(port.loseConnection)
        modems.append(modem)
        model = models[i] if models else "generic"
        specs.append(LineSpec(f"m{i + 1}", f"serial:{b}:9600:8N1", model))
    by_name = {m.name: m for m in modems}

    def control_for(name: str) -> IModemControl | None:
        return EmulatedModemControl(by_name[name]) if dtr else None

    pool = ModemPool(
        reactor,
        specs,
        dial=dial or DialSettings(guard=FEP_GUARD, dial_timeout=5.0, hangup_timeout=0.5),
        policy=policy or RetryPolicy(busy_delay=0.05, backoff=0.1, backoff_factor=2.0),
        store=store,
        control_for=control_for if dtr else _no_control,
        on_incoming=on_incoming,
    )
    pool.startService()
    case.addCleanup(_stop, pool)
    assert pool.opened is not None
    await pool.opened
    return pool, modems


def _no_control(name: str) -> IModemControl:
    from fep.channels.modem.line import NoModemControl

    return NoModemControl()


def _stop(pool: ModemPool) -> Deferred[Any]:
    return pool.stopService() if pool.running else Deferred.fromCoroutine(_nothing())


async def _nothing() -> None:
    return None


def new_exchange(**kw: Any) -> Exchange:
    return Exchange(reactor, ring_time=kw.pop("ring_time", RING), **kw)
