"""A firmware upgrade asked through the real daemon's API (`twistd -n fep` as a child) names
an image of the firmware directory (DATA_DIR/firmware by default), never a path: a path is
refused with 400 naming the meter, the command and the image, and nothing is recorded; a
named image is accepted with its SHA-256 kept with the command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from twisted.trial import unittest

from fep.model import Meter
from tests.daemon.harness import Daemon, add_meters, free_port, wait_for, write_config
from tests.operator.helpers import OPERATOR_TOKEN, VIEWER_TOKEN, http, write_tokens


class DaemonFirmwareImageTests(unittest.TestCase):
    timeout = 120

    async def test_a_path_is_refused_and_a_named_image_accepted(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        (workdir / "firmware").mkdir(parents=True)
        image = b"\x7fFW" + bytes(range(256)) * 4
        (workdir / "firmware" / "fw-2.1.bin").write_bytes(image)
        secret = workdir / "secret.bin"
        secret.write_bytes(b"not for meters")
        db = workdir / "fep.sqlite"
        write_tokens(workdir / "tokens")
        await add_meters(f"sqlite:{db}",
                         [Meter("m1", "dlms", f"tcp:host=127.0.0.1:port={free_port()}")])
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, collect=False,
            extra=f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        base = f"http://127.0.0.1:{http_port}"

        async def up() -> bool:
            try:
                return (await http(f"{base}/api/v1/stats", token=VIEWER_TOKEN)).status == 200
            except Exception:
                return False

        await wait_for(up, 60, "the daemon's API")

        async def ask(image: str) -> tuple[int, dict[str, object]]:
            body = {"action": "firmware-upgrade", "params": {"image": image}}
            r = await http(f"{base}/api/v1/meters/m1/commands", method=b"POST",
                           token=OPERATOR_TOKEN, body=json.dumps(body).encode())
            return r.status, r.json()

        for path in (str(secret), str(workdir / "firmware" / "fw-2.1.bin"),
                     "../secret.bin", "/etc/passwd", "fw-9.bin"):
            status, answer = await ask(path)
            self.assertEqual(status, 400, answer)
            error = str(answer["error"])
            for part in ("meter m1", "firmware-upgrade", repr(path)):
                self.assertIn(part, error)
        r = await http(f"{base}/api/v1/commands", token=VIEWER_TOKEN)
        self.assertEqual(r.json()["commands"], [])  # nothing refused was recorded

        status, answer = await ask("fw-2.1.bin")
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["status"], "requested")  # firmware-upgrade awaits approval
        params = answer["params"]
        assert isinstance(params, dict)
        self.assertEqual((params["image"], params["image_sha256"], params["image_size"]),
                         ("fw-2.1.bin", hashlib.sha256(image).hexdigest(), len(image)))
        self.assertEqual(await daemon.interrupt(), 0)
