"""What every protocol's Twisted adapter does when a one-shot meter session ends in failure:
drop the connection at once, and say how long a timed-out step was given."""

from __future__ import annotations

from typing import Any, TypeVar

from fep.errors import SessionTimeout

E = TypeVar("E", bound=Exception)


def abort(transport: Any) -> None:
    """Close the connection without flushing: a failed session's unsent bytes are worthless
    and a half-answering meter must not hold the line (loseConnection where there is no
    abort)."""
    if transport is not None:
        (getattr(transport, "abortConnection", None) or transport.loseConnection)()


def within(error: E, timeout: float) -> E:
    """A SessionTimeout with the step's time limit added to its message; other errors as
    they are."""
    if not isinstance(error, SessionTimeout):
        return error
    limited: E = SessionTimeout(  # type: ignore[assignment]  # E is a SessionTimeout here
        f"{error.message} within {timeout:.1f} s",
        meter=error.meter,
        route=error.route,
        protocol=error.protocol,
    )
    return limited
