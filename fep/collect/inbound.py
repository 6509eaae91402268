"""The collection engine's side of inbound (GPRS) sessions: which node a modem is connected
to (its jobs run there), jobs for meters that registered themselves, and waking a modem up
(a wake-up SMS, then waiting for it to dial in) before a job for its ``gprs:`` route.

The GPRS channel tells these of its sessions (fep.interfaces.IModemSessionObserver); the
daemon (fep.service) wires them. Both only need callables and the job store, so tests drive
them with fakes on a MemoryReactorClock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ChannelError, FepError
from fep.interfaces import IJobStore, IModemSessionObserver, IWakeUp
from fep.model import Meter

log = Logger(namespace="fep.collect.inbound")

GPRS = "gprs:"


def _gprs(meters: Sequence[Meter]) -> list[Meter]:
    return [m for m in meters if m.route.startswith(GPRS)]


@implementer(IModemSessionObserver)
class SessionHomes:
    """Keeps the job store's session homes: a modem attached here makes this node the home
    of its routes' resources (other nodes leave their jobs alone), its session ending clears
    that unless the modem is connected again. A registered meter gets the tasks marked
    ``on_register`` (Scheduler.meter_registered)."""

    def __init__(
        self,
        reactor: IReactorTime,
        jobs: IJobStore,
        scheduler: Any,
        *,
        node: str,
        connected: Callable[[str], bool],
    ) -> None:
        self.reactor = reactor
        self.jobs = jobs
        self.scheduler = scheduler
        self.node = node
        self.connected = connected
        # Home writes go in order (an attach and its end must not overtake each other).
        self._lock = DeferredLock()

    def _resource(self, meter: Meter) -> str:
        key: str = self.scheduler.resources.key(meter.route)
        return key

    def _set(self, resource: str, node: str | None, meter: Meter) -> Deferred[Any]:
        def write() -> Deferred[None]:
            return self.jobs.set_home(resource, node, float(self.reactor.seconds()))

        d: Deferred[Any] = self._lock.run(write)

        def failed(f: Failure) -> None:
            log.warn("session home of {meter} ({resource}) not kept: {error}",
                     meter=meter.id, route=meter.route, resource=resource, error=f.value)

        d.addErrback(failed)
        return d

    def modem_attached(self, meters: Sequence[Meter]) -> None:
        for meter in _gprs(meters):
            d = self._set(self._resource(meter), self.node, meter)
            # Jobs that waited for the modem may run now.
            d.addCallback(lambda _: self.scheduler.kick())

    def modem_gone(self, meters: Sequence[Meter]) -> None:
        for meter in _gprs(meters):
            if not self.connected(meter.route):
                self._set(self._resource(meter), None, meter)

    def meter_registered(self, meter: Meter) -> None:
        d: Deferred[int] = Deferred.fromCoroutine(self.scheduler.meter_registered(meter))
        d.addErrback(lambda f: log.warn(
            "registered meter {meter}: its on_register tasks not made: {error}",
            meter=meter.id, route=meter.route, error=f.value))


@implementer(IWakeUp, IModemSessionObserver)
class ModemWakeUp:
    """IWakeUp for the collection engine: ``send(meter)`` asks the modem to connect (the SMS
    channel's wake-up text, fep.collect.sms.SmsWakeUp.wake_up), then the wait lasts until
    the GPRS channel says the modem attached (``connected(route)``) or ``timeout`` passes."""

    def __init__(
        self,
        reactor: IReactorTime,
        send: Callable[[Meter], Deferred[Any]],
        connected: Callable[[str], bool],
    ) -> None:
        self.reactor = reactor
        self.send = send
        self.connected = connected
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self.sent = 0

    def is_connected(self, route: str) -> bool:
        return self.connected(route)

    def wake_up(self, meter: Meter, timeout: float) -> Deferred[None]:
        return Deferred.fromCoroutine(self._wake_up(meter, timeout))

    async def _wake_up(self, meter: Meter, timeout: float) -> None:
        arrived: Deferred[None] = Deferred()
        waiting = self._waiting.setdefault(meter.route, [])
        waiting.append(arrived)

        def too_late() -> None:
            if not arrived.called:
                arrived.errback(ChannelError(
                    f"meter {meter.id}: its modem did not connect within {timeout:g} s of "
                    "the wake-up", route=meter.route))

        timer = self.reactor.callLater(timeout, too_late)
        try:
            try:
                await self.send(meter)
            except FepError:
                raise
            except Exception as e:
                raise ChannelError(f"meter {meter.id}: wake-up not sent: {e}",
                                   route=meter.route) from e
            self.sent += 1
            if self.connected(meter.route):
                return
            await arrived
        finally:
            if timer.active():
                timer.cancel()
            arrived.addErrback(lambda _: None)  # a timeout nobody waited for any more
            if arrived in waiting:
                waiting.remove(arrived)
            if not waiting:
                self._waiting.pop(meter.route, None)

    def modem_attached(self, meters: Sequence[Meter]) -> None:
        for route in list(self._waiting):
            if self.connected(route):
                for d in list(self._waiting.get(route, ())):
                    if not d.called:
                        d.callback(None)

    def modem_gone(self, meters: Sequence[Meter]) -> None:
        pass

    def meter_registered(self, meter: Meter) -> None:
        pass
