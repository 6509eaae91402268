"""The dlt698 package decoding the benchmark's DL/T 698.45 frames (test-only: fep never
imports it). Reads {"normal": hex, "record": hex} on stdin, prints decodes per second (frame
to APDU values) as JSON."""

from __future__ import annotations

import json
import sys

from dlt698 import codec

from fep.bench_dlms import rate


def main() -> None:
    frames = {k: bytes.fromhex(v) for k, v in json.load(sys.stdin).items()}

    def decoder(frame: bytes):  # type: ignore[no-untyped-def]
        def decode() -> object:
            (decoded,) = codec.FrameStreamDecoder().feed(frame)
            return codec.decode_apdu(decoded.payload)

        return decode

    print(json.dumps({name: rate(decoder(frame)) for name, frame in frames.items()}))


if __name__ == "__main__":
    main()
