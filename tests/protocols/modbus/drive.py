"""Driving a sans-IO recorder procedure against an answer function, without bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fep.protocols.modbus.pdu import ExceptionResponse, Request, Response, exception_for
from fep.protocols.modbus.recorder import Procedure


def drive(procedure: Procedure[Any], answer: Callable[[Request], Response],
          log: list[Request] | None = None) -> Any:
    """Run ``procedure`` to its end, answering each request with ``answer``."""
    try:
        request = next(procedure)
        while True:
            if log is not None:
                log.append(request)
            response = answer(request)
            if isinstance(response, ExceptionResponse):
                request = procedure.throw(exception_for(response.function, response.code,
                                                        address=request.address))
            else:
                request = procedure.send(response)
    except StopIteration as stop:
        return stop.value
