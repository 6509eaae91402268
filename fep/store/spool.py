"""The spool: an append-only journal of record batches on disk, fsynced (in a worker thread,
group-committed) before a batch counts as accepted, released once the store has committed it.

Files: ``DIR/<segment number>.spool``, each a run of frames ``length (4) | crc32 (4) |
batch id (8) | payload`` where the payload is ``fep.serialize.encode_records``. New batches go
to the current segment; a segment is deleted once every batch in it is released (the current
one too, when it is drained), so a drained spool leaves no data on disk. At open, every frame
of the segments present is read back as unreleased: a replay may repeat a batch the store had
already committed just before a crash, which the store's unique keys absorb.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from fep.errors import StoreError
from fep.model import Record
from fep.reactors import ITimeAndThreads
from fep.serialize import RecordDecodeError, decode_records, encode_records

log = Logger()

_HEADER = struct.Struct(">IIQ")
SUFFIX = ".spool"
# A drained current segment larger than this is replaced by a fresh file.
ROLL_BYTES = 4 * 1024 * 1024


class _Segment:
    __slots__ = ("number", "path", "records", "size", "unreleased")

    def __init__(self, number: int, path: Path) -> None:
        self.number = number
        self.path = path
        self.unreleased: set[int] = set()
        self.records: dict[int, int] = {}
        self.size = 0


def _read_segment(path: Path) -> tuple[list[tuple[int, list[Record]]], str | None]:
    """Every whole frame of one segment file; the reason the rest was cut, if it was."""
    batches: list[tuple[int, list[Record]]] = []
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            return batches, f"torn frame header at byte {offset}"
        length, crc, batch_id = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            return batches, f"torn frame at byte {offset} ({len(payload)} of {length} bytes)"
        if zlib.crc32(payload) != crc:
            return batches, f"CRC mismatch in the frame at byte {offset}"
        try:
            batches.append((batch_id, decode_records(payload)))
        except RecordDecodeError as e:
            return batches, f"undecodable frame at byte {offset}: {e}"
        offset = start + length
    return batches, None


class Spool:
    """The journal. Every disk operation runs, in order, on one worker thread."""

    def __init__(
        self, directory: str | Path, reactor: ITimeAndThreads, threadpool: ThreadPool | None = None
    ) -> None:
        self.directory = Path(directory)
        self._reactor = reactor
        self._own_pool = threadpool is None
        self._pool = threadpool or ThreadPool(1, 1, name="fep-spool")
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._next_batch = 1
        self._pending: list[tuple[int, bytes, int, Deferred[int]]] = []
        self._writing = False
        self._depth = 0
        self._opened = False
        self._rolling = False  # a roll to a new segment file is under way on the worker
        self._closing = False
        self.appended_batches = 0
        self.fsyncs = 0

    # -- thread side ---------------------------------------------------------

    def _in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def _scan(self) -> list[tuple[int, Path, list[tuple[int, list[Record]]], str | None]]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = []
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            try:
                number = int(path.stem)
            except ValueError:
                continue
            batches, cut = _read_segment(path)
            found.append((number, path, batches, cut))
        return found

    def _open_file(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name is durable too
        finally:
            os.close(dir_fd)
        return fd

    def _write_frames(self, fd: int, frames: list[bytes]) -> None:
        os.write(fd, b"".join(frames))
        os.fsync(fd)

    def _roll(self, old_fd: int | None, old_path: Path | None, new_path: Path) -> int:
        if old_fd is not None:
            os.close(old_fd)
        if old_path is not None:
            old_path.unlink(missing_ok=True)
        return self._open_file(new_path)

    # -- reactor side --------------------------------------------------------

    def open(self) -> Deferred[list[tuple[int, list[Record]]]]:
        """Start the worker and read back every unreleased batch, oldest first."""
        if self._own_pool:
            self._pool.start()

        async def run() -> list[tuple[int, list[Record]]]:
            found = await self._in_thread(self._scan)
            replay: list[tuple[int, list[Record]]] = []
            last = 0
            for number, path, batches, cut in found:
                if cut:
                    log.warn(
                        "spool segment {path}: {reason}; the rest of it is ignored",
                        path=str(path),
                        reason=cut,
                    )
                segment = _Segment(number, path)
                segment.size = path.stat().st_size
                self._segments[number] = segment
                for _old_id, records in batches:
                    # Renumbered: ids on disk come from earlier processes and may repeat.
                    new_id = self._next_batch
                    self._next_batch += 1
                    segment.unreleased.add(new_id)
                    segment.records[new_id] = len(records)
                    self._depth += len(records)
                    replay.append((new_id, records))
                last = max(last, number)
                if not segment.unreleased:
                    await self._in_thread(path.unlink, True)
                    del self._segments[number]
            current = _Segment(last + 1, self.directory / f"{last + 1:08d}{SUFFIX}")
            self._fd = await self._in_thread(self._open_file, current.path)
            self._segments[current.number] = current
            self._current = current
            self._opened = True
            if replay:
                log.info(
                    "spool {directory}: {batches} batches ({records} records) to replay",
                    directory=str(self.directory),
                    batches=len(replay),
                    records=self._depth,
                )
            self._kick()
            return replay

        return Deferred.fromCoroutine(run())

    def depth(self) -> int:
        """Records accepted and not yet released."""
        return self._depth

    def append(self, records: Sequence[Record]) -> Deferred[int]:
        """Journal one batch; fires with its id once it is on disk (fsynced)."""
        if self._closing:
            return Deferred.fromCoroutine(_fail(StoreError("the spool is closed")))
        batch_id = self._next_batch
        self._next_batch += 1
        payload = encode_records(list(records))
        d: Deferred[int] = Deferred()
        self._pending.append((batch_id, payload, len(records), d))
        self._depth += len(records)
        self._kick()
        return d

    def _kick(self) -> None:
        if self._writing or not self._pending or not self._opened:
            return
        self._writing = True
        group, self._pending = self._pending, []
        segment = self._current
        assert segment is not None and self._fd is not None
        frames = [_HEADER.pack(len(p), zlib.crc32(p), batch_id) + p for batch_id, p, _, _ in group]
        d = self._in_thread(self._write_frames, self._fd, frames)

        def written(_: object) -> None:
            self.fsyncs += 1
            for (batch_id, _, count, waiter), frame in zip(group, frames, strict=True):
                segment.unreleased.add(batch_id)
                segment.records[batch_id] = count
                segment.size += len(frame)
                self.appended_batches += 1
                waiter.callback(batch_id)

        def failed(failure: Any) -> None:
            error = StoreError(f"spool write to {segment.path} failed: {failure.value}")
            log.error("{error}", error=error)
            for _, _, count, waiter in group:
                self._depth -= count
                waiter.errback(error)

        def done(_: object) -> None:
            self._writing = False
            self._kick()

        d.addCallbacks(written, failed).addBoth(done)

    @property
    def rejected_path(self) -> Path:
        return self.directory / "rejected.jsonl"

    def reject(self, records: Sequence[Record]) -> Deferred[None]:
        """Keep records the store refuses for good in ``rejected.jsonl`` (one JSON list of
        records per line, fsynced) for an operator to look at; they are not replayed."""
        line = encode_records(list(records)) + b"\n"

        def write() -> None:
            fd = os.open(self.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

        return self._in_thread(write)

    def release(self, batch_id: int) -> None:
        """The store has committed this batch: forget it (deleting drained segments)."""
        for segment in self._segments.values():
            if batch_id in segment.unreleased:
                segment.unreleased.discard(batch_id)
                self._depth -= segment.records.pop(batch_id, 0)
                if not segment.unreleased:
                    self._drained(segment)
                return

    def _drained(self, segment: _Segment) -> None:
        if segment is not self._current:
            del self._segments[segment.number]
            self._in_thread(segment.path.unlink, True)
            return
        if segment.size >= ROLL_BYTES and not self._pending and not self._writing:
            self._roll_current()

    def _roll_current(self) -> Deferred[None]:
        old = self._current
        assert old is not None
        new = _Segment(old.number + 1, self.directory / f"{old.number + 1:08d}{SUFFIX}")
        del self._segments[old.number]
        self._segments[new.number] = new
        self._current = new
        self._opened = False  # appends wait until the new file is open
        # The worker closes the old file: nothing here may use (or close) it again.
        old_fd, self._fd = self._fd, None
        self._rolling = True
        d = self._in_thread(self._roll, old_fd, old.path, new.path)

        def opened(fd: int) -> None:
            self._rolling = False
            self._fd = fd
            self._opened = True
            self._kick()

        def failed(failure: Any) -> Any:
            self._rolling = False
            return failure

        return d.addCallbacks(opened, failed)

    def close(self) -> Deferred[None]:
        """Finish pending writes, remove drained files, stop the worker."""
        self._closing = True

        async def run() -> None:
            while self._writing or self._pending or self._rolling:
                await deferLater(self._reactor, 0.01)
            current = self._current
            if self._fd is not None:
                fd, self._fd = self._fd, None
                await self._in_thread(os.close, fd)
            if current is not None and not current.unreleased:
                await self._in_thread(current.path.unlink, True)
            if self._own_pool:
                self._pool.stop()

        if not self._opened and self._fd is None and not self._rolling:
            if self._own_pool and self._pool.started:
                self._pool.stop()
            return succeed(None)
        return Deferred.fromCoroutine(run())


async def _fail(error: Exception) -> int:
    raise error
