"""The spool: an append-only journal of record batches on disk, fsynced (in a worker thread,
group-committed) before a batch counts as accepted, released once the store has committed it.

Files: ``DIR/<segment number>.spool``, each a run of frames ``length (4) | crc32 (4) |
batch id (8) | payload``. The payload is the batch's compact binary form (``encode_batch``:
a marker, then a pickle of one tuple of plain values per record, read back by an unpickler
that builds nothing but plain values); payloads written by earlier
versions (the JSON of ``fep.serialize.encode_records``) are still read, so an upgrade with a
non-empty spool loses nothing. New batches go
to the current segment; a segment is deleted once every batch in it is released (the current
one too, when it is drained), so a drained spool leaves no data on disk. At open, every frame
of the segments present is read back as unreleased: a replay may repeat a batch the store had
already committed just before a crash, which the store's unique keys absorb.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from fep.errors import StoreError
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
from fep.reactors import ITimeAndThreads
from fep.serialize import RecordDecodeError, decode_records, encode_records

log = Logger()

_HEADER = struct.Struct(">IIQ")
SUFFIX = ".spool"
# A drained current segment larger than this is replaced by a fresh file.
ROLL_BYTES = 4 * 1024 * 1024


# The binary payload starts with this (a JSON payload of old never starts with a NUL).
BINARY_MARK = b"\x00fep1"
_READING, _INTERVALS, _EVENT = 0, 1, 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def encode_batch(records: Sequence[Record]) -> bytes:
    """The compact binary payload of a batch: one tuple of plain values per record (times as
    integer microseconds since 1970 UTC, decimals as their text tagged ``d``, other values
    as they are tagged ``v``, OBIS codes as text, enums as their values), pickled; times and
    OBIS codes repeat within a batch and are converted once each."""
    obis_text: dict[ObisCode, str] = {}
    times: dict[datetime, int] = {}
    out: list[tuple[object, ...]] = []
    append = out.append

    def us(t: datetime) -> int:
        n = times.get(t)
        if n is None:
            n = times[t] = (t - _EPOCH) // _US
        return n

    for r in records:
        kind = type(r)
        if kind is Reading:
            assert isinstance(r, Reading)
            o = obis_text.get(r.obis)
            if o is None:
                o = obis_text[r.obis] = str(r.obis)
            unit = r.unit
            value = r.value
            mt = r.meter_time
            if type(value) is Decimal:
                append((_READING, r.meter, o, "d", str(value),
                        None if unit is None else unit.code, r.scaler,
                        None if mt is None else us(mt), us(r.received_time), int(r.quality),
                        r.source, r.native_id))
            else:
                append((_READING, r.meter, o, "v", value, None if unit is None else unit.code,
                        r.scaler, None if mt is None else us(mt), us(r.received_time),
                        int(r.quality), r.source, r.native_id))
        elif kind is IntervalBlock:
            assert isinstance(r, IntervalBlock)
            unit = r.unit
            tags = "".join("d" if type(v) is Decimal else "v" for v in r.values)
            values = tuple(str(v) if type(v) is Decimal else v for v in r.values)
            append((_INTERVALS, r.meter, str(r.obis), us(r.start), r.period // _US, tags,
                    values, tuple(int(s) for s in r.statuses),
                    None if unit is None else unit.code, r.scaler, us(r.received_time),
                    r.source))
        elif kind is MeterEvent:
            assert isinstance(r, MeterEvent)
            append((_EVENT, r.meter, r.code, r.kind.value, r.severity.value, us(r.time), r.text,
                    us(r.received_time), r.source))
        else:
            raise StoreError(f"cannot spool a {kind.__name__}")
    return BINARY_MARK + pickle.dumps(out, protocol=5)


class _Unpickler(pickle.Unpickler):
    """Builds plain values only (tuples, lists, str, int, bool, None): a frame naming any
    class or callable is refused."""

    def find_class(self, module: str, name: str) -> object:
        raise RecordDecodeError(f"{module}.{name} has no place in a spool frame")

    def persistent_load(self, pid: object) -> object:
        raise RecordDecodeError("persistent ids have no place in a spool frame")


# The pickle opcodes a batch may hold: plain values only. The encoder emits a subset of
# these; anything else (a class, a call, a buffer, a bytearray) is refused before unpickling.
# BINPUT and LONG_BINPUT are refused too: they store at an index the input chooses, and the
# C unpickler grows its memo to that index (a 5-byte LONG_BINPUT asked for gigabytes; the
# encoder's protocol 5 memoizes with MEMOIZE, whose index only grows one at a time).
_PLAIN_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_TUPLE",
    "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWTRUE", "NEWFALSE", "BININT",
    "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8", "MEMOIZE", "BINGET", "LONG_BINGET",
})


def _check_opcodes(body: bytes) -> None:
    """Walk the pickle's opcodes (each argument read within the payload's length) and
    refuse any that is not a plain value's. Replays alone pay this, never the hot path."""
    try:
        for opcode, _arg, _pos in pickletools.genops(body):
            if opcode.name not in _PLAIN_OPCODES:
                raise RecordDecodeError(
                    f"pickle opcode {opcode.name} has no place in a spool frame"
                )
    except RecordDecodeError:
        raise
    except Exception as e:
        raise RecordDecodeError(f"not a binary record list: {e}") from None


class _Reader:
    """The payload as the unpickler's input, with ``read`` and ``readline`` only: without a
    ``readinto`` the unpickler copies what it reads, and never lends a buffer that a
    truncated frame could leave dangling (CPython 3.11 reports that as a SystemError)."""

    __slots__ = ("read", "readline")

    def __init__(self, data: bytes) -> None:
        stream = io.BytesIO(data)
        self.read = stream.read
        self.readline = stream.readline


_obis_cache: dict[str, ObisCode] = {}


def _obis(text: str) -> ObisCode:
    code = _obis_cache.get(text)
    if code is None:
        code = ObisCode.parse(text)
        if len(_obis_cache) < 4096:
            _obis_cache[text] = code
    return code


def _unit(code: int | None) -> Unit | None:
    return None if code is None else Unit.by_code(code)


def decode_batch(payload: bytes) -> list[Record]:
    """The records of a frame payload, binary or (written by an earlier version) JSON;
    RecordDecodeError, and nothing else, for anything that is not."""
    if not payload.startswith(BINARY_MARK):
        return decode_records(payload)
    times: dict[int, datetime] = {}

    def when(n: int) -> datetime:
        t = times.get(n)
        if t is None:
            if type(n) is not int:
                raise RecordDecodeError(f"not a time: {n!r}")
            t = times[n] = _EPOCH + timedelta(microseconds=n)
        return t

    def value(tag: str, v: Any) -> Any:
        if tag == "d":
            return Decimal(v)
        if tag == "v":
            return v
        raise RecordDecodeError(f"unknown value tag {tag!r}")

    try:
        body = payload[len(BINARY_MARK):]
        _check_opcodes(body)
        raw = _Unpickler(_Reader(body)).load()
        if not isinstance(raw, list):
            raise RecordDecodeError("not a record list")
        records: list[Record] = []
        for item in raw:
            kind = item[0]
            if kind == _READING:
                (_, meter, obis, tag, v, unit, scaler, meter_time, received, quality, source,
                 native_id) = item
                records.append(Reading(meter, _obis(obis), value(tag, v), _unit(unit), scaler,
                                       None if meter_time is None else when(meter_time),
                                       when(received), Quality(quality), source, native_id))
            elif kind == _INTERVALS:
                (_, meter, obis, start, period, tags, values, statuses, unit, scaler, received,
                 source) = item
                if len(tags) != len(values):
                    raise RecordDecodeError("value tags and values differ in number")
                records.append(IntervalBlock(
                    meter, _obis(obis), when(start), timedelta(microseconds=period),
                    tuple(value(t, v) for t, v in zip(tags, values, strict=True)),
                    tuple(Quality(s) for s in statuses), _unit(unit), scaler, when(received),
                    source))
            elif kind == _EVENT:
                _, meter, code, event_kind, severity, time, text, received, source = item
                records.append(MeterEvent(meter, code, EventKind(event_kind),
                                          Severity(severity), when(time), text, when(received),
                                          source))
            else:
                raise RecordDecodeError(f"unknown record kind {kind!r}")
        return records
    except RecordDecodeError:
        raise
    except Exception as e:
        # A frame passed its CRC, so this is a bug or a hand-edited file: say so, never crash.
        raise RecordDecodeError(f"not a binary record list: {type(e).__name__}: {e}") from None


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
            batches.append((batch_id, decode_batch(payload)))
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
        try:
            payload = encode_batch(records)
        except Exception as e:
            return Deferred.fromCoroutine(_fail(StoreError(f"cannot spool the batch: {e}")))
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
