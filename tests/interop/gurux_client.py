"""A small blocking driver around gurux-dlms's client (test-only: GPLv2, fep never imports
it): gurux builds the request bytes and parses the replies, this module moves them over a
plain TCP socket. Tests run it in a thread while fep's simulator runs on the reactor."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient


class GuruxMeterReader:
    """Associate, read, release with gurux's client over one TCP connection."""

    def __init__(
        self,
        port: int,
        *,
        hdlc: bool = False,
        auth: str = "none",
        password: bytes | None = None,
        ek: bytes | None = None,
        ak: bytes | None = None,
        client_address: int | None = None,
    ) -> None:
        interface = InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER
        mechanism = {
            "none": Authentication.NONE,
            "low": Authentication.LOW,
            "high-gmac": Authentication.HIGH_GMAC,
        }[auth]
        address = client_address or (16 if auth == "none" else 1)
        if ek is not None:
            client: Any = GXDLMSSecureClient(True, address, 1, mechanism, password, interface)
            client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            client.ciphering.systemTitle = bytearray(b"GURUX\x00\x00\x01")
            client.ciphering.blockCipherKey = bytearray(ek)
            client.ciphering.authenticationKey = bytearray(ak or b"")
        else:
            client = GXDLMSClient(True, address, 1, mechanism, password, interface)
        self.client = client
        self.hdlc = hdlc
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    # -- transport ----------------------------------------------------------------------------

    def _read_reply(self, reply: GXReplyData) -> None:
        notify = GXReplyData()
        buffer = GXByteBuffer()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the meter closed the connection")
            buffer.set(chunk)
            if self.client.getData(buffer, reply, notify):
                return

    def exchange(self, frames: Any, reply: GXReplyData | None = None) -> GXReplyData:
        """Send each request frame and read its reply; follow more-data (blocks, RR)."""
        reply = reply or GXReplyData()
        if isinstance(frames, (bytes, bytearray)):
            frames = [frames]
        for frame in frames:
            reply.clear()
            self.sock.sendall(bytes(frame))
            self._read_reply(reply)
            while reply.isMoreData():
                self.sock.sendall(bytes(self.client.receiverReady(reply)))
                self._read_reply(reply)
        return reply

    # -- association ----------------------------------------------------------------------------

    def associate(self) -> None:
        if self.hdlc:
            reply = self.exchange(self.client.snrmRequest())
            self.client.parseUAResponse(reply.data)
        reply = self.exchange(self.client.aarqRequest())
        self.client.parseAareResponse(reply.data)
        if self.client.authentication > Authentication.LOW:
            for request in self.client.getApplicationAssociationRequest():
                reply = self.exchange(request)
                self.client.parseApplicationAssociationResponse(reply.data)

    def release(self) -> None:
        try:
            self.exchange(self.client.releaseRequest())
            if self.hdlc:
                self.exchange(self.client.disconnectRequest())
        finally:
            self.sock.close()

    # -- reads --------------------------------------------------------------------------------

    def read(self, obj: Any, index: int) -> Any:
        reply = self.exchange(self.client.read(obj, index)[0])
        return self.client.updateValue(obj, index, reply.value)

    def object_list(self) -> Any:
        reply = self.exchange(self.client.getObjectsRequest())
        return self.client.parseObjects(reply.data, True)

    def register(self, ln: str) -> tuple[Any, float, Any]:
        """(raw value as gurux decoded it, 10**scaler, unit) of a register."""
        register = GXDLMSRegister(ln)
        self.read(register, 3)
        raw = self.exchange(self.client.read(register, 2)[0]).value
        return raw, register.scaler, register.unit

    def clock(self) -> Any:
        clock = GXDLMSClock("0.0.1.0.0.255")
        return self.read(clock, 2)

    def profile(self, ln: str, start: datetime, end: datetime) -> list[Any]:
        profile = GXDLMSProfileGeneric(ln)
        self.read(profile, 3)  # capture objects
        reply = self.exchange(
            self.client.readRowsByRange(profile, GXDateTime(start), GXDateTime(end))
        )
        rows = self.client.updateValue(profile, 2, reply.value)
        return list(rows or [])
