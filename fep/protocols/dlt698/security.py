"""DL/T 698.45 secured reads without an ESAM of fep's own: the plug point an ESAM service
fills, and the one shipped, which verifies nothing and says so.

A read in plaintext + RN mode sends each GET inside a SECURITY-Request (plaintext, data
verification RN: a random number the master station's ESAM drew); the meter answers with a
SECURITY-Response in plaintext and a MAC its ESAM computed over the answer with that RN.
Only an ESAM holding the meter's keys can check the MAC: fep hands the RN, the answer and
the MAC to ``IDlt698Esam.verify``.

The meter setting ``dlt698_security`` chooses: ``plain`` (no SECURITY wrapping, the
default), ``plaintext-rn`` (wrapped; an answer whose MAC nobody could verify is taken and
counted as unverified), ``refuse-unverified`` (wrapped; such an answer fails the read). A
MAC the ESAM service finds wrong fails the read in both. Ciphertext answers are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from zope.interface import Attribute, Interface, implementer

PLAIN: Final = "plain"
PLAINTEXT_RN: Final = "plaintext-rn"
REFUSE_UNVERIFIED: Final = "refuse-unverified"
SECURITY_MODES: Final = (PLAIN, PLAINTEXT_RN, REFUSE_UNVERIFIED)
RN_SIZE: Final = 16


class IDlt698Esam(Interface):
    """The master station's ESAM (a security module or the utility's key service), as fep
    uses it for plaintext + RN reads. Called on the reactor: an implementation answers at
    once (a remote service is asked ahead of time, or through a local module)."""

    name = Attribute("what verifies, for logs and errors")

    def random(meter: str) -> bytes:
        """The random number (RN) for the next request to ``meter``."""

    def verify(meter: str, rn: bytes, apdu: bytes, mac: bytes) -> bool | None:
        """True when ``mac`` is the meter's MAC over ``apdu`` with ``rn``; False when it is
        not; None when this service cannot tell (no key for the meter, no ESAM)."""


@implementer(IDlt698Esam)
class NoEsam:
    """The ESAM service fep ships: random numbers from the operating system, and no MAC
    verified (``verify`` answers None, "cannot tell")."""

    name = "no ESAM service (MACs not verified)"

    def __init__(self, random: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random

    def random(self, meter: str) -> bytes:
        return self._random(RN_SIZE)

    def verify(self, meter: str, rn: bytes, apdu: bytes, mac: bytes) -> bool | None:
        return None


__all__ = [
    "PLAIN",
    "PLAINTEXT_RN",
    "REFUSE_UNVERIFIED",
    "SECURITY_MODES",
    "IDlt698Esam",
    "NoEsam",
]
