"""Firmware images are named, never pathed (fep.collect.firmware): a firmware-upgrade's image
is a plain name of the firmware directory, checked and hashed when the command is requested
(the engine's one command validation, every door's), and sent only if it still has that hash
when the job runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands, firmware
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus
from fep.model import Meter
from tests.collect.harness import engine_for
from tests.collect.test_dlms_jobs import CountingMeter, serve
from tests.daemon.harness import wait_for

IMAGE = bytes(range(256)) * 2
SHA = firmware.sha256(IMAGE)


def firmware_home(case: unittest.TestCase) -> Path:
    home = Path(case.mktemp()).resolve()
    home.mkdir(parents=True)
    (home / "fw-1.2.bin").write_bytes(IMAGE)
    return home


class ImageNameTests(unittest.TestCase):
    def test_plain_names_are_accepted(self) -> None:
        for name in ("fw-1.2.bin", "A", "meter_FW+3.0-rc1.img", "x" * firmware.MAX_NAME):
            self.assertEqual(firmware.checked_name(name, "meter m1"), name)

    def test_path_like_and_odd_names_are_refused(self) -> None:
        for name in ("/etc/passwd", "../fw.bin", "..", ".", ".hidden", "sub/fw.bin",
                     "fw..bin", "C:\\fw.bin", "fw bin", "fw\x00.bin", "fw\n.bin", "-rf",
                     "fïrmware.bin", "x" * (firmware.MAX_NAME + 1), "", None, 12, ["fw"]):
            with self.assertRaises(firmware.ImageRefused) as caught:
                firmware.checked_name(name, "meter m1: firmware-upgrade")
            self.assertIn("meter m1: firmware-upgrade", str(caught.exception))

    def test_a_refused_long_name_is_shown_shortened(self) -> None:
        with self.assertRaises(firmware.ImageRefused) as caught:
            firmware.checked_name("/" * 100_000, "meter m1")
        self.assertLess(len(str(caught.exception)), 1000)

    def test_the_default_directory_is_under_the_data_dir(self) -> None:
        self.assertEqual(firmware.firmware_directory("/var/lib/fep", ""),
                         Path("/var/lib/fep/firmware"))
        self.assertEqual(firmware.firmware_directory("/var/lib/fep", "/srv/fw"),
                         Path("/srv/fw"))


class ReadImageTests(unittest.TestCase):
    def setUp(self) -> None:
        self.home = firmware_home(self)

    def refused(self, name: str, directory: Path | None = None) -> str:
        with self.assertRaises(firmware.ImageRefused) as caught:
            firmware.read_image(directory or self.home, name, "meter m1")
        return str(caught.exception)

    def test_an_image_of_the_directory_is_read(self) -> None:
        self.assertEqual(firmware.read_image(self.home, "fw-1.2.bin", "meter m1"), IMAGE)

    def test_a_missing_image_is_refused(self) -> None:
        self.assertIn("no such image", self.refused("fw-9.9.bin"))

    def test_no_directory_configured_refuses(self) -> None:
        with self.assertRaises(firmware.ImageRefused):
            firmware.read_image(None, "fw-1.2.bin", "meter m1")

    def test_a_link_leading_outside_the_directory_is_refused(self) -> None:
        outside = Path(self.mktemp()).resolve()
        outside.write_bytes(b"secret")
        os.symlink(outside, self.home / "escape.bin")
        self.assertIn("outside", self.refused("escape.bin"))
        os.symlink(self.home / "fw-1.2.bin", self.home / "current.bin")
        self.assertEqual(firmware.read_image(self.home, "current.bin", "m"), IMAGE)

    def test_a_directory_a_fifo_or_an_empty_file_is_refused(self) -> None:
        (self.home / "adir").mkdir()
        self.assertIn("regular file", self.refused("adir"))
        os.mkfifo(self.home / "fifo.bin")
        self.assertIn("regular file", self.refused("fifo.bin"))
        (self.home / "empty.bin").write_bytes(b"")
        self.assertIn("empty", self.refused("empty.bin"))


class RequestTests(unittest.TestCase):
    """commands.request, the engine's one validation behind the API, console and CLI."""

    timeout = 30

    async def setUp(self) -> None:
        self.home = firmware_home(self)
        self.meter = Meter("m1", "dlms", "tcp:host=127.0.0.1:port=9")
        self.engine, _ = await engine_for(self, [self.meter], start=False,
                                          collect={"firmware_dir": str(self.home)})

    async def request(self, firmware_dir: Path | None = None, **params: Any) -> Any:
        return await commands.request(
            self.engine.jobs, self.meter, "firmware-upgrade", params, "alice",
            reactor.seconds(), approval=approval_of(self.engine.settings),
            policy=resource_policy(self.engine.settings),
            firmware_dir=firmware_dir or self.engine.firmware_dir,
        )

    async def refused(self, **params: Any) -> str:
        before = await self.engine.jobs.commands()
        try:
            await self.request(**params)
        except commands.CommandError as e:
            self.assertEqual(await self.engine.jobs.commands(), before)  # nothing recorded
            return str(e)
        raise self.failureException(f"{params} was accepted")

    async def test_a_path_is_refused_naming_meter_command_and_image(self) -> None:
        for image in (str(self.home / "fw-1.2.bin"), "/etc/passwd", "../fw-1.2.bin"):
            error = await self.refused(image=image)
            self.assertIn("meter m1", error)
            self.assertIn("firmware-upgrade", error)
            self.assertIn(repr(image), error)

    async def test_a_missing_image_is_refused(self) -> None:
        error = await self.refused(image="fw-9.9.bin")
        self.assertIn("'fw-9.9.bin'", error)
        self.assertIn("no such image", error)
        self.assertIn("needs image=NAME", await self.refused(identifier="FW-1"))

    async def test_no_firmware_directory_refuses_every_image(self) -> None:
        with self.assertRaises(commands.CommandError):
            await commands.request(
                self.engine.jobs, self.meter, "firmware-upgrade", {"image": "fw-1.2.bin"},
                "alice", reactor.seconds(), approval=frozenset(),
                policy=resource_policy(self.engine.settings),
            )

    async def test_a_named_image_is_accepted_with_its_hash_recorded(self) -> None:
        asked = await self.request(image="fw-1.2.bin", identifier="FW-1.2")
        self.assertEqual(asked.status, CommandStatus.REQUESTED)  # firmware needs approval
        self.assertEqual((asked.params["image"], asked.params["image_sha256"],
                          asked.params["image_size"]), ("fw-1.2.bin", SHA, len(IMAGE)))
        (requested,) = await self.engine.jobs.audit(asked.id)
        self.assertIn(SHA, requested.detail)

    async def test_a_hash_given_by_the_caller_must_be_the_images(self) -> None:
        asked = await self.request(image="fw-1.2.bin", image_sha256=SHA.upper(),
                                   image_bytes="ignored")
        self.assertEqual(asked.params["image_sha256"], SHA)
        self.assertNotIn("image_bytes", asked.params)  # only ever the runner's
        error = await self.refused(image="fw-1.2.bin", image_sha256="0" * 64)
        self.assertIn(SHA, error)


class RunTimeTests(unittest.TestCase):
    """The image is read again when the job runs and sent only with the recorded hash."""

    timeout = 60

    async def run_upgrade(self, swap: bytes | None) -> tuple[Any, Any, Any]:
        sim = CountingMeter()
        sim.image["block_size"] = 64
        home = firmware_home(self)
        meter = Meter("m1", "dlms", serve(self, sim))
        engine, _ = await engine_for(self, [meter], collect={"firmware_dir": str(home)})
        policy = resource_policy(engine.settings)
        asked = await commands.request(
            engine.jobs, meter, "firmware-upgrade", {"image": "fw-1.2.bin"}, "alice",
            reactor.seconds(), approval=approval_of(engine.settings), policy=policy,
            firmware_dir=engine.firmware_dir, retry_delay=0.2,
        )
        await commands.approve(engine.jobs, asked.id, "bob", reactor.seconds(), meter, policy)
        if swap is not None:  # after the approval, before the job runs
            (home / "fw-1.2.bin").write_bytes(swap)
        engine.scheduler.kick()

        async def settled() -> bool:
            c = await engine.jobs.command(asked.id)
            return c is not None and c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, "the firmware upgrade to end", every=0.05)
        return await engine.jobs.command(asked.id), sim, engine

    async def test_a_swapped_image_is_refused_and_nothing_is_sent(self) -> None:
        done, sim, engine = await self.run_upgrade(swap=b"\x00evil" + IMAGE)
        self.assertEqual(done.status, CommandStatus.FAILED)
        for part in ("meter m1", f"command {done.id} firmware-upgrade", "'fw-1.2.bin'", SHA,
                     "changed"):
            self.assertIn(part, done.outcome)
        self.assertNotIn("received", sim.__dict__)  # not one block went to the meter
        (job,) = await engine.jobs.jobs()
        self.assertEqual(job.attempts, 1)  # refused once, not retried

    async def test_the_recorded_image_is_sent(self) -> None:
        done, sim, _ = await self.run_upgrade(swap=None)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(b"".join(sim.image["blocks"][k] for k in range(8)), IMAGE)


class CommandLineTests(unittest.TestCase):
    """`fep command request` goes through the same validation: a path exits 2."""

    timeout = 60

    async def test_a_path_exits_2_and_a_named_image_is_requested(self) -> None:
        from fep.store import open_store
        from tests.inprocess import fep_main as run_fep

        workdir = Path(self.mktemp()).resolve()
        (workdir / "firmware").mkdir(parents=True)
        (workdir / "firmware" / "fw-1.2.bin").write_bytes(IMAGE)
        db = f"sqlite:{workdir / 'fep.sqlite'}"
        store = open_store(db, reactor)
        await store.open()
        await store.add_meters([Meter("m1", "dlms", "tcp:host=10.0.0.1:port=4059")])
        await store.close()
        config = workdir / "fep.ini"
        config.write_text(f"[fep]\ndata_dir = {workdir}\n[store]\nurl = {db}\n")

        def fep(image: str) -> Any:
            return run_fep("--config", str(config), "command", "request", "m1",
                           "firmware-upgrade", "-p", f"image={image}")

        refused = fep(str(workdir / "firmware" / "fw-1.2.bin"))
        self.assertEqual(refused.returncode, 2, refused.stderr)
        self.assertIn("meter m1: firmware-upgrade: image '/", refused.stderr)
        accepted = fep("fw-1.2.bin")
        self.assertEqual(accepted.returncode, 0, accepted.stderr)
        self.assertIn("command 1: firmware-upgrade for m1 awaits approval", accepted.stdout)
