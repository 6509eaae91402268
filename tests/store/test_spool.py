"""The spool: batches are on disk before they are acknowledged, come back after a crash,
and leave nothing behind once released."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from fep.model import ObisCode, Reading, Unit
from fep.store import spool as spool_module
from fep.store.spool import SUFFIX, Spool


def readings(n: int, meter: str = "m1", start: int = 0) -> list[Reading]:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Reading(
            meter,
            ObisCode.parse("1.8.0"),
            Decimal(i) / 10,
            Unit.by_code(30),
            3,
            meter_time=t.replace(minute=i % 60, hour=(i // 60) % 24, day=1 + i // 1440),
            received_time=t,
        )
        for i in range(start, start + n)
    ]


class SpoolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())

    async def opened(self) -> tuple[Spool, list[tuple[int, list[Reading]]]]:
        spool = Spool(self.directory, reactor)
        replay = await spool.open()
        return spool, replay  # type: ignore[return-value]

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*" + SUFFIX) if p.stat().st_size)

    async def test_appended_batches_come_back_after_a_restart(self) -> None:
        spool, replay = await self.opened()
        self.assertEqual(replay, [])
        await spool.append(readings(3))
        await spool.append(readings(2, start=3))
        self.assertEqual(spool.depth(), 5)
        # No close: as if the process died here.
        again = Spool(self.directory, reactor)
        replay = await again.open()
        self.assertEqual([records for _, records in replay], [readings(3), readings(2, start=3)])
        self.assertEqual(again.depth(), 5)
        await again.close()
        await spool.close()

    async def test_released_batches_are_not_replayed_and_files_are_removed(self) -> None:
        spool, _ = await self.opened()
        first = await spool.append(readings(3))
        second = await spool.append(readings(2, start=3))
        spool.release(first)
        self.assertEqual(spool.depth(), 2)
        spool.release(second)
        self.assertEqual(spool.depth(), 0)
        await spool.close()
        self.assertEqual(self.files(), [])
        again = Spool(self.directory, reactor)
        self.assertEqual(await again.open(), [])
        await again.close()

    async def test_a_torn_tail_is_cut_off_and_whole_frames_survive(self) -> None:
        spool, _ = await self.opened()
        await spool.append(readings(3))
        await spool.append(readings(2, start=3))
        (path,) = self.files()
        data = path.read_bytes()
        path.write_bytes(data[:-7])  # the crash tore the last frame
        again = Spool(self.directory, reactor)
        replay = await again.open()
        self.assertEqual([records for _, records in replay], [readings(3)])
        self.flushLoggedErrors()
        await again.close()
        await spool.close()

    async def test_a_corrupt_frame_is_detected_by_its_crc(self) -> None:
        spool, _ = await self.opened()
        await spool.append(readings(1))
        await spool.append(readings(1, start=1))
        (path,) = self.files()
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
        again = Spool(self.directory, reactor)
        replay = await again.open()
        self.assertEqual([records for _, records in replay], [readings(1)])
        await again.close()
        await spool.close()

    async def test_batches_appended_during_an_fsync_share_the_next_one(self) -> None:
        spool, _ = await self.opened()
        await gatherResults([spool.append(readings(1, start=i)) for i in range(50)])
        self.assertEqual(spool.appended_batches, 50)
        self.assertLess(spool.fsyncs, 50)
        await spool.close()

    async def test_disk_work_happens_off_the_reactor_thread(self) -> None:
        seen: list[str] = []
        pool = ThreadPool(1, 1, name="test-spool")
        pool.start()
        self.addCleanup(pool.stop)
        spool = Spool(self.directory, reactor, threadpool=pool)
        original = spool._write_frames

        def recording(fd: int, frames: list[bytes]) -> None:
            seen.append(threading.current_thread().name)
            original(fd, frames)

        spool._write_frames = recording  # type: ignore[method-assign]
        await spool.open()
        await spool.append(readings(2))
        await spool.close()
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(seen[0], threading.main_thread().name)

    async def test_replayed_segments_are_removed_once_released(self) -> None:
        spool, _ = await self.opened()
        await spool.append(readings(2))
        again = Spool(self.directory, reactor)
        replay = await again.open()
        for batch_id, _ in replay:
            again.release(batch_id)
        await again.close()
        await spool.close()
        self.assertEqual(self.files(), [])

    async def test_closing_while_a_full_segment_rolls_over(self) -> None:
        # The segment is full and drained: the release starts the roll to a new file on the
        # worker thread, and close comes before it is done (make bench's DLMS push run
        # stopped here with EBADF: close closed the file the roll had closed already).
        self.patch(spool_module, "ROLL_BYTES", 1)
        spool, _ = await self.opened()
        batch = await spool.append(readings(3))
        await deferLater(reactor, 0, lambda: None)  # the write is over (as the store commits)
        spool.release(batch)
        await spool.close()
        self.assertIsNone(spool._fd)  # the new segment's file is not left open
        self.assertEqual(self.files(), [])
        again = Spool(self.directory, reactor)
        self.assertEqual(await again.open(), [])
        await again.close()
