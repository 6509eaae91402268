"""A small blocking driver around gurux-dlms's client (test-only: GPLv2, fep never imports
it): gurux builds the request bytes and parses the replies, this module moves them over a
plain TCP socket and keeps a transcript. Tests run it in a thread while fep's simulator runs
on the reactor."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

GURUX_SYSTEM_TITLE = b"GURUX\x00\x00\x01"


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
            client.ciphering.systemTitle = bytearray(GURUX_SYSTEM_TITLE)
            client.ciphering.blockCipherKey = bytearray(ek)
            client.ciphering.authenticationKey = bytearray(ak or b"")
        else:
            client = GXDLMSClient(True, address, 1, mechanism, password, interface)
        self.client = client
        self.hdlc = hdlc
        # Every byte each way, in order, so tests can look at what was really on the wire.
        self.sent = bytearray()
        self.received = bytearray()
        self.columns: list[tuple[int, str, int]] = []  # the last profile's capture objects
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    # -- transport ----------------------------------------------------------------------------

    def _send(self, frame: Any) -> None:
        self.sent += bytes(frame)
        self.sock.sendall(bytes(frame))

    def _read_reply(self, reply: GXReplyData) -> None:
        notify = GXReplyData()
        buffer = GXByteBuffer()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the meter closed the connection")
            self.received += chunk
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
            self._send(frame)
            self._read_reply(reply)
            while reply.isMoreData():
                self._send(self.client.receiverReady(reply))
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
            self.close()

    def close(self) -> None:
        self.sock.close()

    # -- reads --------------------------------------------------------------------------------

    def read(self, obj: Any, index: int) -> Any:
        reply = self.exchange(self.client.read(obj, index)[0])
        return self.client.updateValue(obj, index, reply.value)

    def object_list(self) -> Any:
        reply = self.exchange(self.client.getObjectsRequest())
        return self.client.parseObjects(reply.data, True)

    def register(self, ln: str) -> tuple[Any, float, Any]:
        register = GXDLMSRegister(ln)
        self.read(register, 3)
        value = self.read(register, 2)
        return value, register.scaler, register.unit

    def clock(self) -> Any:
        clock = GXDLMSClock("0.0.1.0.0.255")
        return self.read(clock, 2)

    def capture_period(self, ln: str) -> Any:
        return self.read(GXDLMSProfileGeneric(ln), 4)

    def profile(self, ln: str, start: datetime, end: datetime) -> list[Any]:
        profile = GXDLMSProfileGeneric(ln)
        self.read(profile, 3)  # capture objects: gurux needs them to read by range
        self.columns = [
            (int(obj.objectType), obj.logicalName, column.attributeIndex)
            for obj, column in profile.captureObjects
        ]
        reply = self.exchange(
            self.client.readRowsByRange(profile, GXDateTime(start), GXDateTime(end))
        )
        rows = self.client.updateValue(profile, 2, reply.value)
        return list(rows or [])


# -- reading a transcript (our own small parsers: what the tests assert on) ---------------------


def wrapper_apdus(stream: bytes) -> list[bytes]:
    """The APDUs of a run of wrapper frames (version 1, wPorts, length, APDU)."""
    apdus, i = [], 0
    while i + 8 <= len(stream):
        length = int.from_bytes(stream[i + 6 : i + 8], "big")
        apdus.append(bytes(stream[i + 8 : i + 8 + length]))
        i += 8 + length
    if i != len(stream):
        raise ValueError(f"{len(stream) - i} trailing bytes after the last wrapper frame")
    return apdus


def hdlc_frames(stream: bytes) -> list[tuple[int, bytes, bool]]:
    """(control, information, segmented) for each frame of a run of HDLC frames."""
    frames, i = [], 0
    while i < len(stream):
        if stream[i] != 0x7E:
            raise ValueError(f"no HDLC flag at {i}")
        fmt = int.from_bytes(stream[i + 1 : i + 3], "big")
        length = fmt & 0x7FF
        body = stream[i + 1 : i + 1 + length]
        j = 2
        for _ in range(2):  # destination then source address: the last byte has bit 0 set
            while not body[j] & 1:
                j += 1
            j += 1
        control = body[j]
        info = bytes(body[j + 3 : -2]) if length > j + 3 else b""  # after HCS, before FCS
        frames.append((control, info, bool(fmt & 0x0800)))
        i += length + 1  # the closing flag, which may also open the next frame
        if i + 1 >= len(stream) or stream[i + 1] == 0x7E:
            i += 1
    return frames


def hdlc_apdus(stream: bytes) -> list[bytes]:
    """The APDUs of a run of HDLC frames: segments joined, the LLC header dropped."""
    apdus, pending = [], b""
    for control, info, segmented in hdlc_frames(stream):
        if control & 1:  # S and U frames carry no APDU here
            continue
        pending += info
        if not segmented:
            if pending[:2] not in (b"\xe6\xe6", b"\xe6\xe7"):
                raise ValueError(f"no LLC header: {pending[:3].hex()}")
            apdus.append(pending[3:])
            pending = b""
    return apdus


def apdus(stream: bytes, hdlc: bool) -> list[bytes]:
    return hdlc_apdus(stream) if hdlc else wrapper_apdus(stream)
