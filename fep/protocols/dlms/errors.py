"""The errors a DLMS/COSEM session reports: each a ProtocolError naming the meter, and where it
applies the COSEM object and the DLMS result code."""

from __future__ import annotations

from fep.errors import ProtocolError

PROTOCOL = "dlms"


class DlmsError(ProtocolError):
    """Base of the DLMS errors; ``protocol`` is always ``dlms``."""

    def __init__(
        self,
        message: str,
        *,
        meter: str | None = None,
        route: str | None = None,
        cosem_object: str | None = None,
    ) -> None:
        self.cosem_object = cosem_object
        if cosem_object:
            message = f"{cosem_object}: {message}"
        super().__init__(message, meter=meter, route=route, protocol=PROTOCOL)


class AssociationRefused(DlmsError):
    """The meter's AARE rejected the association; ``result`` and ``diagnostic`` are the
    ACSE codes, ``reason`` their names."""

    def __init__(
        self,
        reason: str,
        *,
        result: int,
        diagnostic: int | None,
        meter: str | None = None,
        route: str | None = None,
    ) -> None:
        self.result = result
        self.diagnostic = diagnostic
        self.reason = reason
        super().__init__(f"association refused: {reason}", meter=meter, route=route)


class DataAccessError(DlmsError):
    """A GET/SET/ACTION answered with a Data-Access-Result or Action-Result other than
    success; ``result`` is the code, ``result_name`` its name (e.g. ``object-undefined``)."""

    def __init__(
        self,
        result: int,
        result_name: str,
        *,
        meter: str | None = None,
        route: str | None = None,
        cosem_object: str | None = None,
    ) -> None:
        self.result = result
        self.result_name = result_name
        super().__init__(
            f"{result_name} ({result})", meter=meter, route=route, cosem_object=cosem_object
        )


class CommandRefusedByMeter(DlmsError):
    """A command's GET/SET/ACTION refused by the meter: names the meter, the command and the
    meter's own code (``refusal``, the DataAccessError, ExceptionResponse or
    ConfirmedServiceError it answered with)."""

    def __init__(self, command: str, refusal: DlmsError, *, meter: str,
                 route: str | None = None) -> None:
        self.command = command
        self.refusal = refusal
        self.result = getattr(refusal, "result", None)
        super().__init__(f"meter {meter}: {command} refused by the meter: {refusal}",
                         meter=meter, route=route)


class ExceptionResponse(DlmsError):
    """The meter answered with an Exception-Response (state error and service error)."""


class ConfirmedServiceError(DlmsError):
    """The meter answered with a Confirmed-Service-Error (service, error class, error)."""


class CipheringError(DlmsError):
    """A ciphered APDU could not be authenticated or deciphered (wrong key, bad tag, unknown
    system title). Never carries a key."""


class ReplayError(CipheringError):
    """A ciphered APDU's invocation counter is not above the last one accepted from that
    system title."""


class DowngradeError(CipheringError):
    """An unciphered APDU arrived where a ciphered one was due (a meter with keys, a
    ciphered association): refused, and a security event."""
