"""gurux-dlms decoding the benchmark's frames (test-only: fep never imports gurux). Reads
{"notification": hex, "profile": hex, "aare": hex, "seconds": s} on stdin (wrapper frames,
an AARE's bytes, seconds of CPU time per case), prints decodes per second as JSON."""

from __future__ import annotations

import json
import sys

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType

from fep.bench_dlms import rate


def main() -> None:
    given = json.load(sys.stdin)
    seconds = float(given.pop("seconds", 2.0))
    frames = {k: bytes.fromhex(v) for k, v in given.items()}
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)

    def decoder(frame: bytes):  # type: ignore[no-untyped-def]
        def decode() -> object:
            reply, notify = GXReplyData(), GXReplyData()
            client.getData(GXByteBuffer(frame), reply, notify)
            value = notify.value if notify.value is not None else reply.value
            assert value is not None and len(value) in (13, 96)
            return value

        return decode

    def association(aare: bytes):  # type: ignore[no-untyped-def]
        def decode() -> object:
            # ACSE, the result and the InitiateResponse in user-information.
            client.parseAareResponse(GXByteBuffer(aare))
            assert client.maxReceivePDUSize == 500
            return client

        return decode

    aare = frames.pop("aare", None)
    rates = {name: rate(decoder(frame), seconds) for name, frame in frames.items()}
    if aare is not None:
        rates["aare"] = rate(association(aare), seconds)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
