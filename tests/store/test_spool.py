"""The spool: batches are on disk before they are acknowledged, come back after a crash,
and leave nothing behind once released."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from fep.model import (
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Record,
    Severity,
    Unit,
)
from fep.serialize import RecordDecodeError, encode_records
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


def mixed_records() -> list[Record]:
    """Every record kind and value type the spool must give back exactly."""
    t = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    obis = ObisCode.parse("1-0:1.8.0*255")
    return [
        Reading("m1", obis, Decimal("12.3450"), Unit.by_code(30), 3, meter_time=t,
                received_time=t, quality=Quality.ESTIMATED, source="iec", native_id="1.8.0"),
        Reading("m1", obis, 7, received_time=t),
        Reading("m1", obis, True, received_time=t),
        Reading("m1", obis, False, received_time=t),
        Reading("m1", obis, None, received_time=t),
        Reading("m1", obis, "12.5", received_time=t),  # a text that looks like a number
        Reading("m\u00e9ter\t\n\\", obis, "text \u20ac\x00", received_time=t),
        IntervalBlock("m2", ObisCode.parse("1.8.0"), t, timedelta(minutes=15),
                      (Decimal("1.5"), None, 3, "x", Decimal("-0")),
                      (Quality.OK, Quality.ESTIMATED, Quality.OK, Quality.OK, Quality.OK),
                      Unit.by_code(30), -1, t, "dlms"),
        IntervalBlock("m2", ObisCode.parse("2.8.0"), t, timedelta(seconds=1.5),
                      (Decimal(1),), received_time=t),
        MeterEvent("m3", "power-down", EventKind.POWER_OUTAGE, Severity.MAJOR,
                   datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "off", t, "dlms"),
    ]


class BinaryFormTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())

    def test_every_kind_and_value_type_round_trips_exactly(self) -> None:
        records = mixed_records()
        back = spool_module.decode_batch(spool_module.encode_batch(records))
        self.assertEqual(back, records)
        # Types survive too (7 is not 7.0 nor Decimal 7, True is not 1, "12.5" is text).
        self.assertEqual([type(getattr(r, "value", None)) for r in back],
                         [type(getattr(r, "value", None)) for r in records])
        self.assertEqual([type(v) for v in back[7].values],  # type: ignore[union-attr]
                         [Decimal, type(None), int, str, Decimal])

    def test_the_binary_form_is_not_json_and_is_smaller(self) -> None:
        batch = readings(200)
        binary = spool_module.encode_batch(batch)
        self.assertTrue(binary.startswith(spool_module.BINARY_MARK))
        self.assertLess(len(binary), len(encode_records(batch)) * 0.7)

    def test_a_frame_naming_a_class_is_refused(self) -> None:
        evil = spool_module.BINARY_MARK + pickle.dumps([os.system], protocol=5)
        with self.assertRaises(RecordDecodeError):
            spool_module.decode_batch(evil)
        # A buffer or bytearray (never written by fep) is refused before unpickling.
        for kind in (bytearray(b"xy"), pickle.PickleBuffer(b"xy")):
            with self.assertRaises(RecordDecodeError):
                spool_module.decode_batch(
                    spool_module.BINARY_MARK + pickle.dumps([kind], protocol=5))
        for junk in (b"", b"\x80\x05", pickle.dumps({"a": 1}), pickle.dumps([(9, "x")])):
            with self.assertRaises(RecordDecodeError):
                spool_module.decode_batch(spool_module.BINARY_MARK + junk)

    def test_a_memo_index_the_input_chooses_is_refused(self) -> None:
        # Found by the fuzzer (tests/fuzz/crashes/spool_batch/oom-...): LONG_BINPUT with an
        # index of 680 million made the C unpickler grow its memo to gigabytes.
        for opcode in (b"r\x05t\x94(", b"q\xff"):
            frame = b"\x80\x05]\x94(K\x01" + opcode + b"e."
            with self.assertRaises(RecordDecodeError) as caught:
                spool_module.decode_batch(spool_module.BINARY_MARK + frame)
            self.assertIn("BINPUT", str(caught.exception))

    async def test_json_frames_of_an_earlier_version_are_replayed(self) -> None:
        # An upgrade with a non-empty spool: the old process wrote JSON payloads.
        self.directory.mkdir(parents=True)
        old = mixed_records()
        frames = b""
        for batch_id, batch in ((1, old[:4]), (2, old[4:])):
            payload = encode_records(batch)
            frames += struct.pack(">IIQ", len(payload), zlib.crc32(payload), batch_id) + payload
        (self.directory / f"{1:08d}{SUFFIX}").write_bytes(frames)
        spool = Spool(self.directory, reactor)
        replay = await spool.open()
        self.assertEqual([records for _, records in replay], [old[:4], old[4:]])
        # New batches go to a new segment in the binary form; both replay after a crash.
        await spool.append(readings(2))
        again = Spool(self.directory, reactor)
        replay = await again.open()
        self.assertEqual([records for _, records in replay], [old[:4], old[4:], readings(2)])
        new_segment = sorted(self.directory.glob("*" + SUFFIX))[1].read_bytes()
        self.assertEqual(new_segment[16:16 + len(spool_module.BINARY_MARK)],
                         spool_module.BINARY_MARK)
        await again.close()
        await spool.close()
