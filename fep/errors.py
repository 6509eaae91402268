"""The exception families of fep, one per layer, each carrying what it concerns."""

from __future__ import annotations


class FepError(Exception):
    """Base of every error fep raises on purpose."""


class ConfigError(FepError):
    """A configuration file or option is wrong; names the file, section and key."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.section = section
        self.key = key
        self.message = message
        where = []
        if file:
            where.append(file)
        if section:
            where.append(f"[{section}]")
        if key:
            where.append(key)
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class FrameError(FepError):
    """Bytes from a meter or modem do not form a valid frame.

    ``offset`` is the byte offset in the frame or buffer where the fault was found,
    ``field`` the part of the frame concerned (e.g. ``"BCC"``, ``"data line 3"``).
    """

    def __init__(
        self, message: str, *, offset: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.offset = offset
        self.field = field
        super().__init__(message)


class ProtocolError(FepError):
    """A meter session went wrong at the protocol level (bad state, refused request,
    unexpected answer, the meter's own error code)."""

    def __init__(
        self,
        message: str,
        *,
        meter: str | None = None,
        route: str | None = None,
        protocol: str | None = None,
    ) -> None:
        self.message = message
        self.meter = meter
        self.route = route
        self.protocol = protocol
        super().__init__(message)


class SessionTimeout(ProtocolError):
    """The meter did not answer in time."""


class ChannelError(FepError):
    """A channel could not give a byte pipe: connect refused, port missing, line lost."""

    def __init__(self, message: str, *, route: str | None = None) -> None:
        self.message = message
        self.route = route
        super().__init__(message)


class RouteError(ChannelError):
    """A route string is not valid."""


class StoreError(FepError):
    """The store failed to commit or answer (it may succeed later: retry)."""


class RecordRejected(StoreError):
    """The store refuses these records whatever the retry (data it cannot hold). The router
    sets them aside in the spool's rejected-records file instead of retrying for ever."""


class NotSupported(FepError):
    """A meter's protocol cannot do what a job asks (a capability it lacks): the job fails at
    once with this outcome, without retries."""

    def __init__(self, message: str, *, meter: str | None = None, protocol: str | None = None
                 ) -> None:
        self.message = message
        self.meter = meter
        self.protocol = protocol
        super().__init__(message)
