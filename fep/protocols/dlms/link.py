"""DLMS links over a byte pipe, sans-IO: the wrapper (TCP/UDP, IEC 62056-47) and HDLC
(IEC 62056-46) as the session sees them: bytes to open a link, to carry an APDU and to close
it, and received bytes turned into APDUs and bytes to send back."""

from __future__ import annotations

import enum

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlms import hdlc, wrapper
from fep.protocols.dlms.errors import PROTOCOL

# Public client SAP (16) reads without authentication; management (1) with LLS/HLS.
PUBLIC_CLIENT = 16
WRAPPER_PORT_SERVER = 1

_PUSH_FIRST_BYTES = frozenset({0x0F, 0xC2, 0xDB, 0xDC})


class LinkKind(enum.Enum):
    WRAPPER = "wrapper"
    HDLC = "hdlc"


@attrs.frozen
class LinkSettings:
    kind: LinkKind = LinkKind.WRAPPER
    client_address: int = PUBLIC_CLIENT
    server_logical: int = 1
    server_physical: int | None = None
    # HDLC over a slow line: how many times a silent step is repeated before giving up.
    retries: int = 2


class Link:
    """What the session needs of a link: bytes to open it, to carry an APDU, to close it,
    and received bytes turned into APDUs and bytes to send back."""

    def open(self) -> list[bytes]:
        return []

    def is_open(self) -> bool:
        return True

    def send(self, apdu: bytes) -> list[bytes]:
        raise NotImplementedError

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """(APDUs received, bytes to send now)."""
        raise NotImplementedError

    def close(self) -> list[bytes]:
        return []

    def timeout(self) -> list[bytes]:
        return []

    def take_buffered(self) -> bytes:
        """Hand out (and forget) the bytes received but not decoded yet (the start of a
        push after the meter's last answer, for the channel's push decoder)."""
        return b""


class WrapperLink(Link):
    def __init__(self, settings: LinkSettings) -> None:
        self.client_wport = settings.client_address
        self.server_wport = settings.server_logical
        self.decoder = wrapper.WrapperDecoder()

    def send(self, apdu: bytes) -> list[bytes]:
        frame = wrapper.WrapperFrame(self.client_wport, self.server_wport, apdu)
        return [wrapper.encode_wrapper(frame)]

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """The APDUs ``data`` completes. Garbage is dropped and decoding goes on after it in
        this same call (each step drops bytes, so the work is bounded by ``data``); the first
        FrameError is raised only when no frame came, so an answer after junk is not left
        waiting in the buffer for bytes that may never come."""
        frames: list[wrapper.WrapperFrame] = []
        first_error: FrameError | None = None
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                first_error = first_error or item
            else:
                frames.append(item)
        if first_error is not None and not frames:
            raise first_error
        # Answers come to our wPort; a meter's pushes go to its push destination, whatever
        # that is: they are taken too (the client tells them from answers).
        return [
            f.apdu
            for f in frames
            if f.destination_wport == self.client_wport
            or (f.apdu and f.apdu[0] in _PUSH_FIRST_BYTES)
        ], []

    def take_buffered(self) -> bytes:
        return self.decoder.drain()


class HdlcLink(Link):
    def __init__(self, settings: LinkSettings) -> None:
        self.link = hdlc.HdlcClientLink(
            hdlc.HdlcAddress(settings.client_address),
            hdlc.HdlcAddress(settings.server_logical, settings.server_physical),
        )
        self.connected = False

    def open(self) -> list[bytes]:
        return [self.link.connect()]

    def is_open(self) -> bool:
        return self.connected

    def send(self, apdu: bytes) -> list[bytes]:
        return self.link.send(apdu)

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        apdus: list[bytes] = []
        out: list[bytes] = []
        for event in self.link.receive_data(data):
            if isinstance(event, hdlc.ApduReceived):
                apdus.append(event.apdu)
            elif isinstance(event, hdlc.SendFrame):
                out.append(event.data)
            elif isinstance(event, hdlc.LinkConnected):
                self.connected = True
            elif isinstance(event, hdlc.LinkRefused):
                raise ProtocolError(f"HDLC link refused: {event.reason}", protocol=PROTOCOL)
            elif isinstance(event, hdlc.LinkDisconnected):
                self.connected = False
        return apdus, out

    def close(self) -> list[bytes]:
        return [self.link.disconnect()]

    def timeout(self) -> list[bytes]:
        return self.link.timeout()
