"""gurux-dlms decoding the benchmark's frames (test-only: fep never imports gurux).

Reads one line of JSON {"notification": hex, "profile": hex, "aare": hex} (wrapper frames and
an AARE's bytes) and answers "ready"; then, for each line {"case": name, "seconds": s}, decodes
that case for ``s`` seconds of CPU time and answers {"rate": decodes per second}. The bench
asks for fep's rate and this one's in turns, case by case, so both see the same load.
"""

from __future__ import annotations

import json
import sys

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType

from fep.bench_dlms import rate


def main() -> None:
    frames = {k: bytes.fromhex(v) for k, v in json.loads(sys.stdin.readline()).items()}
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

    cases = {
        name: association(frame) if name == "aare" else decoder(frame)
        for name, frame in frames.items()
    }
    for case in cases.values():
        case()  # each case decodes before the bench relies on it
    print("ready", flush=True)
    for line in sys.stdin:
        asked = json.loads(line)
        print(json.dumps({"rate": rate(cases[asked["case"]], asked["seconds"])}), flush=True)


if __name__ == "__main__":
    main()
