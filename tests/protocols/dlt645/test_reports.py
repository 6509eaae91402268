"""DL/T 645 active reporting with bytes alone (fep.protocols.dlt645.reports): the status word
and its reset word, the exchange a report starts (04001501 read, event records read, stored,
then 04001503 written, never before the store), repeats, data reports, silence, refusals,
junk; and a pull that tells a meter's report from its answer (fep.protocols.dlt645.client)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import EventKind, IntervalBlock, MeterEvent, Reading, Severity
from fep.protocols.dlt645.client import (
    ClientSettings,
    Dlt645Client,
    Finished,
    Reported,
    Send,
)
from fep.protocols.dlt645.frames import Frame, FrameDecoder, decode_frame
from fep.protocols.dlt645.reports import (
    REPORT_RESET,
    REPORT_STATUS,
    Action,
    Bad,
    Done,
    Reply,
    ReportLink,
    ReportMeter,
    Store,
    decode_status,
    encode_status,
    report_frame,
    reset_bits,
    reset_word,
)
from fep.protocols.dlt645.services import Function, Password, encode_di, read_data
from fep.sim.dlt645 import SimulatedDlt645Meter

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
A1, A2 = "000000000101", "000000000102"
COVER = 0x03300D00


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_link(**kwargs: object) -> tuple[ReportLink, Clock]:
    clock = Clock()
    meters = {A1: ReportMeter("m1"), A2: ReportMeter("m2", Password(2, "123456"), "00000042")}
    return ReportLink(meters, now=lambda: NOW, clock=clock, **kwargs), clock  # type: ignore[arg-type]


def sent(actions: list[Action]) -> list[Frame]:
    return [decode_frame(a.data) for a in actions if isinstance(a, Reply)]


def meter_at(address: str) -> SimulatedDlt645Meter:
    return SimulatedDlt645Meter(address=address, clock=lambda: NOW.timestamp(), events=[])


def run(link: ReportLink, meter: SimulatedDlt645Meter, actions: list[Action],
        store: bool = True) -> list[Action]:
    """Play the link against the meter until it waits on nothing: every request answered,
    every Store confirmed (``store``) or failed."""
    seen: list[Action] = []
    todo = list(actions)
    while todo:
        action = todo.pop(0)
        seen.append(action)
        if isinstance(action, Reply):
            answer = meter.answer(decode_frame(action.data))
            if answer is not None:
                todo += link.receive(answer.encode())
        elif isinstance(action, Store) and action.ticket is not None:
            todo += link.stored(action.ticket) if store else link.not_stored(action.ticket)
    return seen


class StatusWordTests(unittest.TestCase):
    def test_status_word_with_counts(self) -> None:
        data = encode_status({10: 2, 69: 1})
        self.assertEqual(len(data), 12 + 1 + 2 + 1)
        self.assertEqual(data[1], 0x04)  # bit 10: byte 1, bit 2
        self.assertEqual(data[12:], bytes([0xAA, 2, 1, 0xAA]))
        self.assertEqual(dict(decode_status(data).counts), {10: 2, 69: 1})

    def test_bare_status_word_counts_one_each(self) -> None:
        data = encode_status({3: 5}, with_counts=False)
        self.assertEqual(dict(decode_status(data).counts), {3: 1})

    def test_bad_status_words(self) -> None:
        for data in (bytes(11), encode_status({1: 1})[:-1], bytes(12) + b"\xaa\x01\xaa",
                     encode_status({1: 1})[:-1] + b"\x00"):
            with self.assertRaises(FrameError):
                decode_status(data)

    def test_reset_word_zeroes_the_bits_to_reset(self) -> None:
        word = reset_word([10, 69])
        self.assertEqual(len(word), 12)
        self.assertEqual(word[1], 0xFB)
        self.assertEqual(reset_bits(word), {10, 69})
        self.assertEqual(reset_bits(b"\xff" * 12), set())

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.integers(0, 95), st.integers(1, 254), max_size=20))
    def test_round_trip(self, counts: dict[int, int]) -> None:
        self.assertEqual(dict(decode_status(encode_status(counts)).counts), counts)
        self.assertEqual(reset_bits(reset_word(counts)), set(counts))


class ExchangeTests(unittest.TestCase):
    def test_report_read_stored_then_reset_in_that_order(self) -> None:
        link, _ = make_link()
        meter = meter_at(A2)
        opened = datetime(2024, 3, 1, 11, 50, tzinfo=UTC)
        meter.raise_event(COVER, opened, opened + timedelta(minutes=1))
        first = link.receive(meter.report().encode(preamble=2))
        self.assertIsInstance(first[0], Done)
        self.assertEqual([(f.function, f.data[:4]) for f in sent(first)],
                         [(Function.READ_DATA, encode_di(REPORT_STATUS))])
        # The meter answers; the record of bit 10 is read; the records are handed over.
        answer = meter.answer(sent(first)[0])
        assert answer is not None
        second = link.receive(answer.encode())
        self.assertEqual(sent(second)[0].data, encode_di(COVER | 1))
        answer = meter.answer(sent(second)[0])
        assert answer is not None
        third = link.receive(answer.encode())
        (store,) = third
        assert isinstance(store, Store) and store.ticket is not None
        self.assertEqual(store.meter, "m2")
        events = [r for r in store.records if isinstance(r, MeterEvent)]
        self.assertEqual([(e.code, e.kind, e.time) for e in events],
                         [("03300D00", EventKind.COVER_OPEN, opened)])
        # Nothing is reset before the store says the records are durable.
        self.assertEqual(link.receive(b""), [])
        self.assertEqual(meter.report_resets, 0)
        reset = link.stored(store.ticket)
        (write,) = sent(reset)
        self.assertEqual(write.function, Function.WRITE_DATA)
        self.assertEqual(write.data[:4], encode_di(REPORT_RESET))
        self.assertEqual(write.data[4:8], Password(2, "123456").encode())
        self.assertEqual(write.data[12:], reset_word([10]))
        answer = meter.answer(write)
        assert answer is not None
        done = link.receive(answer.encode())
        self.assertIsInstance(done[0], Done)
        self.assertIn("status bits 10 reset", done[0].what)  # type: ignore[union-attr]
        self.assertEqual(meter.report_counts, {})
        self.assertEqual(meter.report_resets, 1)
        self.assertFalse(link.busy)
        self.assertEqual(link.stats.resets, 1)

    def test_store_failure_resets_nothing(self) -> None:
        link, _ = make_link()
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        seen = run(link, meter, link.receive(meter.report().encode()), store=False)
        self.assertFalse(any(f.function == Function.WRITE_DATA for a in seen
                             if isinstance(a, Reply) for f in [decode_frame(a.data)]))
        self.assertEqual(meter.report_counts, {10: 1})
        self.assertFalse(link.busy)
        # Reported again later: this time stored and reset.
        run(link, meter, link.receive(meter.report().encode()))
        self.assertEqual(meter.report_counts, {})

    def test_report_twice_reads_once(self) -> None:
        link, _ = make_link()
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        frame = meter.report().encode()
        actions = link.receive(frame + frame)
        self.assertEqual(len(sent(actions)), 1)
        seen = run(link, meter, actions)
        stores = [a for a in seen if isinstance(a, Store)]
        self.assertEqual(len(stores), 1)
        self.assertEqual(link.stats.exchanges, 1)
        # The same report after the reset: the status word read is empty, nothing stored.
        seen = run(link, meter, link.receive(frame))
        self.assertFalse([a for a in seen if isinstance(a, Store)])
        self.assertTrue(any(isinstance(a, Done) and "nothing to report" in a.what for a in seen))

    def test_two_meters_one_at_a_time(self) -> None:
        link, _ = make_link()
        m1, m2 = meter_at(A1), meter_at(A2)
        m1.raise_event(COVER, NOW - timedelta(minutes=3))
        m2.raise_event(0x03110000, NOW - timedelta(hours=1), NOW - timedelta(minutes=50))
        actions = link.receive(m1.report().encode() + m2.report().encode())
        self.assertEqual([f.address for f in sent(actions)], [A1])

        class Bus:
            def answer(self, request: Frame) -> Frame | None:
                return m1.answer(request) or m2.answer(request)

        seen = run(link, Bus(), actions)  # type: ignore[arg-type]
        stores = [a for a in seen if isinstance(a, Store)]
        self.assertEqual([s.meter for s in stores], ["m1", "m2"])
        kinds = {e.kind for s in stores for e in s.records if isinstance(e, MeterEvent)}
        self.assertLessEqual({EventKind.COVER_OPEN, EventKind.POWER_OUTAGE}, kinds)
        self.assertEqual((m1.report_counts, m2.report_counts), ({}, {}))

    def test_bits_without_records_are_events_timed_when_first_seen(self) -> None:
        link, clock = make_link()
        meter = meter_at(A1)
        meter.report_counts = {3: 1, 12: 1}  # clock battery low, magnetic field
        seen = run(link, meter, link.receive(meter.report().encode()), store=False)
        (store,) = [a for a in seen if isinstance(a, Store)]
        events = {e.code: e for e in store.records if isinstance(e, MeterEvent)}
        self.assertEqual(set(events), {"04001501-03", "04001501-12"})
        self.assertEqual(events["04001501-12"].severity, Severity.CRITICAL)
        self.assertEqual(events["04001501-03"].kind, EventKind.LOW_BATTERY)
        # Not stored, so reported again: the same events (same time), stored once.
        later = ReportLink(link.meters, now=lambda: NOW + timedelta(hours=1), clock=clock)
        later._first_seen = link._first_seen
        seen = run(later, meter, later.receive(meter.report().encode()))
        (again,) = [a for a in seen if isinstance(a, Store)]
        self.assertEqual({e.time for e in again.records}, {NOW})
        self.assertEqual(meter.report_counts, {})

    def test_silence_gives_up_and_resets_nothing(self) -> None:
        link, _ = make_link(retries=1)
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        first = link.receive(meter.report().encode())
        self.assertEqual([a.wait for a in first if isinstance(a, Reply)], [10.0])
        again = link.timeout()
        self.assertEqual(sent(again), sent(first))
        gone = link.timeout()
        self.assertIsInstance(gone[0], Bad)
        self.assertEqual(gone[0].kind, "silent")  # type: ignore[union-attr]
        self.assertFalse(link.busy)
        self.assertEqual(link.timeout(), [])

    def test_overdue_requests_go_again_with_the_next_bytes(self) -> None:
        link, clock = make_link(retries=1)
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        first = link.receive(meter.report().encode())
        self.assertEqual(link.pending(), 1)
        clock.t += 10
        self.assertEqual(link.pending(), 0)  # a pull is not held back by a silent meter
        junk = Frame("000000009999", 0x91, encode_di(0x00010000) + bytes(4)).encode()
        again = link.receive(junk)
        self.assertEqual(sent(again), sent(first))
        self.assertEqual(link.pending(), 1)
        clock.t += 10
        gone = link.receive(b"")
        self.assertEqual([a.kind for a in gone if isinstance(a, Bad)], ["silent"])
        self.assertFalse(link.busy)
        self.assertEqual(meter.report_counts, {10: 1})

    def test_reset_refused_is_counted(self) -> None:
        link, _ = make_link()
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        actions = link.receive(meter.report().encode())
        # A new bit comes up between the read and the reset: the meter refuses the reset.
        seen = []
        todo = list(actions)
        while todo:
            action = todo.pop(0)
            seen.append(action)
            if isinstance(action, Reply):
                request = decode_frame(action.data)
                if request.function == Function.WRITE_DATA:
                    meter.report_read = frozenset()
                answer = meter.answer(request)
                if answer is not None:
                    todo += link.receive(answer.encode())
            elif isinstance(action, Store) and action.ticket is not None:
                todo += link.stored(action.ticket)
        self.assertEqual([a.kind for a in seen if isinstance(a, Bad)], ["refused"])
        self.assertEqual(meter.report_counts, {10: 1})

    def test_follow_up_bit_on_an_unasked_answer_starts_the_exchange(self) -> None:
        link, _ = make_link()
        meter = meter_at(A1)
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        energy = meter.answer(read_data(A1, 0x00010000))
        assert energy is not None
        flagged = Frame(energy.address, energy.control | 0x20, energy.data)
        actions = link.receive(flagged.encode())
        store = [a for a in actions if isinstance(a, Store)]
        self.assertEqual(len(store), 1)
        self.assertIsInstance(store[0].records[0], Reading)
        self.assertEqual(sent(actions)[0].data, encode_di(REPORT_STATUS))
        self.assertEqual(link.stats.follow_ups, 1)

    def test_data_report_stored_once_within_the_window(self) -> None:
        link, clock = make_link()
        meter = meter_at(A2)
        energy = meter.answer(read_data(A2, 0x00010000))
        assert energy is not None
        first = link.receive(energy.encode())
        (store,) = first
        assert isinstance(store, Store)
        self.assertIsNone(store.ticket)
        self.assertEqual(store.meter, "m2")
        self.assertEqual(link.receive(energy.encode()), [])
        self.assertEqual(link.stats.repeats, 1)
        clock.t += 1000
        self.assertEqual(len(link.receive(energy.encode())), 1)

    def test_load_records_and_event_records_reported(self) -> None:
        link, _ = make_link()
        meter = SimulatedDlt645Meter(address=A1, clock=lambda: NOW.timestamp(),
                                     started=NOW.timestamp() - 3600)
        profile = meter.answer(read_data(A1, 0x06000002, blocks=2))
        record = meter.answer(read_data(A1, 0x03110001))
        assert profile is not None and record is not None
        stores = [a for a in link.receive(profile.encode() + record.encode())
                  if isinstance(a, Store)]
        self.assertEqual(len(stores), 2)
        self.assertTrue(stores[0].records)
        self.assertTrue(all(isinstance(r, IntervalBlock) for r in stores[0].records))
        self.assertEqual({r.kind for r in stores[1].records if isinstance(r, MeterEvent)},
                         {EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED})
        self.assertEqual(sent([]), [])

    def test_junk_is_counted_and_the_link_goes_on(self) -> None:
        link, _ = make_link()
        meter = meter_at(A1)
        good = meter.report().encode()
        damaged = good[:-2] + bytes([good[-2] ^ 0x01]) + good[-1:]
        junk = [
            damaged,
            Frame("000000009999", 0x91, encode_di(REPORT_STATUS) + bytes(12)).encode(),
            read_data(A1, 0x00010000).encode(),
            Frame(A1, 0x91, encode_di(REPORT_STATUS) + b"\x01").encode(),
            Frame(A1, 0x91, encode_di(0x7F7F7F7F) + b"\x01").encode(),
            Frame(A1, 0x94, b"").encode(),
        ]
        bad = [a for frame in junk for a in link.receive(frame) if isinstance(a, Bad)]
        self.assertEqual([b.kind for b in bad],
                         ["checksum", "address", "unexpected", "report", "unknown",
                          "unexpected"])
        self.assertEqual(bad[-1].total, 6)
        self.assertEqual(bad[1].address, "000000009999")
        meter.raise_event(COVER, NOW - timedelta(minutes=3))
        run(link, meter, link.receive(meter.report().encode()))
        self.assertEqual(meter.report_counts, {})

    def test_a_report_behind_a_bad_frame_in_the_same_bytes_is_taken_at_once(self) -> None:
        # Another meter's frame, a damaged one, then a report: the decoder holds the error
        # back behind the first frame; the report behind the error is taken now, not when
        # the DTU sends again.
        link, _ = make_link()
        meter = meter_at(A1)
        good = meter.report().encode()
        damaged = good[:-2] + bytes([good[-2] ^ 0x01]) + good[-1:]
        other = Frame("000000009999", 0x91, encode_di(REPORT_STATUS) + bytes(12)).encode()
        actions = link.receive(other + damaged + good)
        self.assertEqual([a.kind for a in actions if isinstance(a, Bad)],
                         ["address", "checksum"])
        (done,) = [a for a in actions if isinstance(a, Done)]
        self.assertEqual((done.meter, done.address), ("m1", A1))
        self.assertEqual(link.decoder.buffered, 0)

    def test_wildcard_address_is_the_single_meter(self) -> None:
        meter = ReportMeter("only")
        link = ReportLink({A1: meter}, now=lambda: NOW, clock=Clock(), fallback=meter)
        frame = report_frame("AAAAAAAAAAAA", {10: 1}).encode()
        actions = link.receive(frame)
        self.assertEqual(sent(actions)[0].address, "AAAAAAAAAAAA")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_raise(self, data: bytes) -> None:
        link, _ = make_link()
        for action in link.receive(data) + link.timeout() + link.timeout():
            self.assertIsInstance(action, Reply | Store | Done | Bad)


def pull_of(meter: SimulatedDlt645Meter) -> tuple[Dlt645Client, Frame]:
    """A pull of one item from ``meter`` on a channel that carries reports (hand-over), and
    the meter's answer to its request."""
    client = Dlt645Client(ClientSettings(address=meter.address, items=(0x00010000,),
                                         wakeup=False), now=lambda: NOW)  # fmt: skip
    client.hand_over = True
    (request,) = client.start()
    assert isinstance(request, Send)
    answer = meter.answer(decode_frame(request.data))
    assert answer is not None
    return client, answer


class PullTellsReportsTests(unittest.TestCase):
    def test_report_during_a_pull_is_set_aside(self) -> None:
        meter = meter_at(A1)
        other = meter_at(A2)
        other.raise_event(COVER, NOW - timedelta(minutes=2))
        meter.raise_event(COVER, NOW - timedelta(minutes=1))
        client, answer = pull_of(meter)
        # Before the answer: the meter's own status word, and the other meter's report.
        actions = client.receive(meter.report().encode() + other.report().encode()
                                 + answer.encode())
        reported = [a for a in actions if isinstance(a, Reported)]
        self.assertEqual([r.address for r in reported], [A1, A2])
        self.assertEqual(decode_frame(reported[0].frame), meter.report())
        (finished,) = [a for a in actions if isinstance(a, Finished)]
        self.assertEqual(len(finished.records), 1)
        # The frames set aside are whole frames the report handler takes as they are.
        decoder = FrameDecoder()
        self.assertEqual(len(decoder.receive(b"".join(r.frame for r in reported))), 2)

    def test_a_report_right_after_the_last_answer_is_kept_for_the_channel(self) -> None:
        # The last answer and another meter's report in one read: the read ends at its
        # answer, and the report's bytes stay undecoded for the session to give back to
        # the channel (they were decoded with the answer and lost).
        other = meter_at(A2)
        other.raise_event(COVER, NOW - timedelta(minutes=2))
        client, answer = pull_of(meter_at(A1))
        report = other.report().encode()
        actions = client.receive(answer.encode() + report)
        self.assertEqual([type(a) for a in actions], [Finished])
        self.assertEqual(client.decoder.drain(), report)

    def test_without_hand_over_another_address_is_still_an_error(self) -> None:
        meter = meter_at(A2)
        client = Dlt645Client(ClientSettings(address=A1, items=(0x00010000,), wakeup=False),
                              now=lambda: NOW)
        client.start()
        energy = meter.answer(read_data(A2, 0x00010000))
        assert energy is not None
        actions = client.receive(energy.encode())
        self.assertTrue(client.done)
        self.assertFalse([a for a in actions if isinstance(a, Reported)])


class DtuMetersTests(unittest.TestCase):
    def test_meters_on_the_dtus_route_with_their_reset_password(self) -> None:
        from fep.model import Meter
        from fep.protocols.dlt645.reports import RESET_PASSWORD
        from fep.protocols.dlt645.session import dtu_meters

        route = "gprs:imei=1"
        meters = [
            Meter("m1", "dlt645", route, address=A1),
            Meter("m2", "dlt645", route, address=A2,
                  metadata={"dlt645_password": "02123456", "dlt645_operator": "42"}),
            Meter("elsewhere", "dlt645", "gprs:imei=2", address="000000000103"),
            Meter("dlms", "dlms", route, address="000000000104"),
            Meter("bad", "dlt645", route, address="12X"),
        ]
        found = dtu_meters(meters[0], meters, UTC)
        self.assertEqual(set(found), {A1, A2})
        self.assertEqual(found[A1].password, RESET_PASSWORD)
        self.assertEqual((found[A2].id, found[A2].password, found[A2].operator),
                         ("m2", Password(2, "123456"), "00000042"))

    def test_handler_of_a_dtu_with_one_meter_takes_the_wildcard_address(self) -> None:
        from fep.model import Meter
        from fep.protocols.dlt645.session import Dlt645Protocol

        meter = Meter("only", "dlt645", "gprs:imei=1", address=A1)

        class Directory:
            def all(self) -> list[Meter]:
                return [meter]

        written: list[bytes] = []
        handler = Dlt645Protocol().push_handler(
            meter, None, directory=Directory(), counters=None,  # type: ignore[arg-type]
            source="gprs:imei=1", close=lambda: None, reply=written.append)
        self.addCleanup(handler.connection_lost)
        handler.data_received(report_frame("AAAAAAAAAAAA", {10: 1}).encode())
        self.assertEqual([decode_frame(w).data[:4] for w in written],
                         [encode_di(REPORT_STATUS)])
        self.assertEqual(handler.frames, 1)

    def test_the_handler_after_a_pull_carries_the_exchange_on(self) -> None:
        from fep.model import Meter
        from fep.protocols.dlt645.session import Dlt645Protocol

        meters = [Meter("m1", "dlt645", "gprs:imei=1", address=A1),
                  Meter("m2", "dlt645", "gprs:imei=1", address=A2)]

        class Directory:
            def all(self) -> list[Meter]:
                return meters

        class Sink:
            def __init__(self) -> None:
                self.records: list[object] = []

            def submit(self, records: list[object]) -> object:
                from twisted.internet.defer import succeed

                self.records += records
                return succeed(None)

        sim = meter_at(A2)
        sim.raise_event(COVER, NOW - timedelta(minutes=3))
        written: list[bytes] = []
        sink = Sink()

        def handler() -> object:
            made = Dlt645Protocol().push_handler(
                meters[0], sink, directory=Directory(), counters=None,  # type: ignore[arg-type]
                source="gprs:imei=1", close=lambda: None, reply=written.append)
            self.addCleanup(made.connection_lost)
            return made

        first = handler()
        first.data_received(sim.report().encode())  # type: ignore[attr-defined]
        self.assertEqual(first.pending(), 1)  # type: ignore[attr-defined]
        first.take_buffered()  # type: ignore[attr-defined]  # a pull takes the session
        second = handler()
        second.inherit(first)  # type: ignore[attr-defined]
        while written:
            answer = sim.answer(decode_frame(written.pop(0)))
            if answer is not None:
                second.data_received(answer.encode())  # type: ignore[attr-defined]
        self.assertEqual(sim.report_counts, {})
        self.assertEqual([e.code for e in sink.records], ["03300D00"])  # type: ignore[attr-defined]
        self.assertEqual((first.frames, second.frames), (1, 3))  # type: ignore[attr-defined]
        self.assertEqual(second.pending(), 0)  # type: ignore[attr-defined]
