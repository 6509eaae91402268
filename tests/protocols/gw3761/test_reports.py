"""A dialled-in concentrator's own frames, sans-IO (fep.protocols.gw3761.reports): bytes in,
confirmations, records to store and bad input out."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
from twisted.trial import unittest

from fep.model import EventKind, MeterEvent, Severity
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Control,
    EventCounter,
    Frame,
    FrameDecoder,
    Function,
    Seq,
    TimeLabel,
    decode_frame,
)
from fep.protocols.gw3761.reports import Bad, ConcentratorLink, Linked, Reply, Store, point_meters
from fep.protocols.gw3761.services import EventRecord
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator
from tests.protocols.gw3761.published import FRAMES

NOW = datetime(2024, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 at the terminal (UTC+8)
ADDRESS = Address("4403", 4)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def link(points: dict[int, str] | None = None, address: Address | None = ADDRESS,
         known: int | None = None) -> tuple[ConcentratorLink, Clock]:
    clock = Clock()
    return ConcentratorLink("DCU1", address, now=lambda: NOW, clock=clock,
                            points=points, known_events=known), clock


def sim(**kwargs: object) -> SimulatedConcentrator:
    return make_concentrator(3, "4403:0004", clock=lambda: NOW.timestamp(), **kwargs)


def confirms(actions: list[object]) -> list[Frame]:
    out = []
    for a in actions:
        data = a.data if isinstance(a, Reply) else getattr(a, "confirm", None)
        if data:
            out.append(decode_frame(data))
    return out


class LinkTests(unittest.TestCase):
    def test_login_heartbeat_logout_are_confirmed_all(self) -> None:
        handler, _ = link(address=None)
        actions = handler.receive(FRAMES["node_login"])
        self.assertEqual(actions[0], Reply(FRAMES["node_login_confirm"]))
        self.assertEqual(actions[1], Linked("login", Address("0200", 0x1234)))
        c = sim()
        for raw, what in ((c.login(), "login"), (c.heartbeat(), "heartbeat"),
                          (c.logout(), "logout")):
            h, _ = link()
            actions = h.receive(raw)
            (frame,) = confirms(actions)
            self.assertEqual((frame.afn, frame.uplink, frame.control.initiator),
                             (Afn.CONFIRM, False, False))
            self.assertEqual(frame.seq.seq, decode_frame(raw).seq.seq)
            self.assertIsInstance(services.decode_event(frame), services.Confirmed)
            self.assertEqual(actions[-1].what, what)  # type: ignore[attr-defined]
            # The simulator takes the confirmation as its own.
            c.answer(frame)
        self.assertEqual(len(c.confirmations), 3)

    def test_a_reported_event_is_stored_then_confirmed(self) -> None:
        c = sim()
        c.events_read = len(c.events)  # the startup events were read before
        handler, _ = link(points={1: "m1"}, known=len(c.events))
        record = EventRecord(13, datetime(2024, 3, 1, 11, 30), 1, True, {"flags": 0x08})
        raw = c.report_event(record)
        actions = handler.receive(raw)
        (store,) = actions
        assert isinstance(store, Store)
        (event,) = store.records
        assert isinstance(event, MeterEvent)
        self.assertEqual((event.meter, event.code, event.kind, event.severity),
                         ("m1", "ERC13", EventKind.METER_ERROR, Severity.MAJOR))
        self.assertEqual(event.time, datetime(2024, 3, 1, 3, 30, tzinfo=UTC))
        self.assertEqual(event.source, "DCU1")
        assert store.confirm is not None
        c.answer(decode_frame(store.confirm))
        # Confirmed: the terminal counts its event as read (ACD off); nothing fetched.
        self.assertEqual(c.events_read, len(c.events))
        self.assertEqual(handler.known_events, len(c.events))
        self.assertEqual(handler.stats.reports, 1)
        self.assertEqual(handler.stats.fetches, 0)

    def test_a_report_after_events_not_read_fetches_them_all(self) -> None:
        # Two events from before (not read), then one reported: ACD says three are there;
        # the report's own pointer does not say the first two were read: all three are
        # fetched (the reported one is stored again: the store keeps it once).
        c = sim()
        handler, _ = link(points={1: "m1"})
        actions = handler.receive(c.report_event(EventRecord(
            13, datetime(2024, 3, 1, 11, 30), 1, True, {"flags": 0x08})))
        fetch = decode_frame(next(a for a in actions if isinstance(a, Reply)).data)
        (item,) = services.decode_units(Afn.CLASS3, fetch.data, False)
        self.assertEqual(item.value, services.EventsRequest(0, 3))
        self.assertIsNone(handler.known_events)

    def test_an_event_of_a_point_no_meter_sits_at_is_the_concentrators(self) -> None:
        c = sim()
        handler, _ = link(points={}, known=len(c.events))
        raw = c.report_event(EventRecord(13, datetime(2024, 3, 1, 11, 30), 7, True,
                                         {"flags": 0x08}))
        (store,) = handler.receive(raw)
        assert isinstance(store, Store)
        self.assertEqual([r.meter for r in store.records], ["DCU1"])

    def test_acd_with_events_not_read_fetches_them_from_the_last_counter(self) -> None:
        c = sim(acd_on_link=True)
        handler, clock = link(points={1: "m1"})
        decoder = FrameDecoder()
        actions = handler.receive(c.heartbeat())
        # Confirmed, and (EC = 2, nothing read yet) AFN 0E F1 from pointer 0 to 2.
        replies = [a for a in actions if isinstance(a, Reply)]
        self.assertEqual(len(replies), 2)
        fetch = decode_frame(replies[1].data)
        self.assertEqual(fetch.afn, Afn.CLASS3)
        (item,) = services.decode_units(Afn.CLASS3, fetch.data, False)
        self.assertEqual(item.value, services.EventsRequest(0, 2))
        self.assertTrue(handler.fetching)
        self.assertGreater(handler.pending(), 0)
        # Another ACD while the fetch is under way asks nothing more.
        self.assertEqual(len(confirms(handler.receive(c.heartbeat()))), 1)
        answers = c.receive(replies[1].data, decoder)
        stores = [a for a in handler.receive(b"".join(answers)) if isinstance(a, Store)]
        codes = sorted(r.code for s in stores for r in s.records)  # type: ignore[attr-defined]
        self.assertEqual(codes, ["ERC13", "ERC14", "ERC14.on"])
        self.assertEqual(handler.known_events, 2)
        self.assertFalse(handler.fetching)
        # The terminal's EC is read now: its next heartbeat has no ACD, nothing is fetched.
        self.assertEqual(len(confirms(handler.receive(c.heartbeat()))), 1)
        # A new event (reported with a gap the handler knows of): fetched from 2 on.
        c.add_event(EventRecord(31, datetime(2024, 3, 1, 11, 50), 1, True))
        actions = handler.receive(c.heartbeat())
        fetch = decode_frame([a for a in actions if isinstance(a, Reply)][1].data)
        (item,) = services.decode_units(Afn.CLASS3, fetch.data, False)
        self.assertEqual(item.value, services.EventsRequest(2, 3))
        # A fetch left unanswered lets another go after its wait.
        clock.t += 31
        self.assertFalse(handler.fetching)
        self.assertEqual(handler.stats.fetches, 2)

    def test_an_answer_to_a_read_with_acd_gives_its_ec_only(self) -> None:
        c = sim()  # two events not read
        handler, _ = link(points={1: "m1"}, known=None)
        master = services.Master(c.address)
        request = master.request(Afn.CLASS1, b"".join(services.request_units(
            Afn.CLASS1, [1], [129])))
        (answer,) = c.answer(request)
        actions = handler.receive(answer.encode())
        self.assertFalse([a for a in actions if isinstance(a, Bad | Store)])
        (fetch,) = [decode_frame(a.data) for a in actions if isinstance(a, Reply)]
        (item,) = services.decode_units(Afn.CLASS3, fetch.data, False)
        self.assertEqual(item.value, services.EventsRequest(0, 2))
        self.assertEqual(handler.stats.answers_for_ec, 1)

    def test_a_multi_frame_report_is_joined(self) -> None:
        c = sim()
        records = tuple(EventRecord(13, datetime(2024, 3, 1, 11, m), 1, True, {"flags": 8})
                        for m in range(20))
        units = services.encode_items(Afn.CLASS3, [services.Item(0, 1, services.Events(
            20, 0, 0, 20, records))], True)
        template = Frame(Control(Function.USER_DATA, uplink=True, initiator=True),
                         c.address, Afn.CLASS3, Seq(5, con=True))
        # One data unit cannot be split: three frames of the same report's bytes.
        whole = units[0]
        parts = [whole[:100], whole[100:200], whole[200:]]
        frames = [attrs.evolve(template, data=p, seq=Seq((5 + i) & 15, fir=i == 0,
                                                          fin=i == 2, con=True))
                  for i, p in enumerate(parts)]
        handler, _ = link(points={1: "m1"})
        actions = handler.receive(b"".join(f.encode() for f in frames))
        stores = [a for a in actions if isinstance(a, Store)]
        self.assertEqual(len(stores), 1)
        self.assertEqual(len(stores[0].records), 20)
        self.assertEqual(len(confirms(actions)), 3)  # each frame asked


class ReportedDataTests(unittest.TestCase):
    def reported(self, c: SimulatedConcentrator, afn: int, points: list[int], fn: int,
                 value: object = None) -> bytes:
        """The simulator's answer to a request, sent as a report (PRM = 1, CON)."""
        master = services.Master(c.address)
        request = master.request(afn, b"".join(services.request_units(afn, points, [fn],
                                                                      value)))
        (answer,) = c.answer(request)
        return attrs.evolve(answer, control=Control(Function.USER_DATA, uplink=True,
                                                    initiator=True),
                            seq=Seq(9, con=True), ec=None).encode()

    def test_class1_data_of_a_named_point_and_of_another(self) -> None:
        c = sim()
        handler, _ = link(points={1: "m1"})
        (store,) = handler.receive(self.reported(c, Afn.CLASS1, [1, 2], 129))
        assert isinstance(store, Store)
        meters = {r.meter for r in store.records}
        self.assertEqual(meters, {"m1", "DCU1/P2"})
        self.assertIsNotNone(store.confirm)

    def test_a_report_of_another_afn_is_denied(self) -> None:
        c = sim()
        handler, _ = link()
        actions = handler.receive(self.reported(c, Afn.QUERY_PARAMETERS, [0], 10, (1,)))
        self.assertEqual([a.kind for a in actions if isinstance(a, Bad)], ["unknown"])
        (denial,) = confirms(actions)
        self.assertIsInstance(services.decode_event(denial), services.Denied)
        self.assertEqual(handler.stats.reports, 0)


class BadInputTests(unittest.TestCase):
    def kinds(self, handler: ConcentratorLink, data: bytes) -> list[str]:
        return [a.kind for a in handler.receive(data) if isinstance(a, Bad)]

    def test_each_kind_is_counted_and_the_link_goes_on(self) -> None:
        c = sim()
        handler, _ = link()
        beat = bytearray(c.heartbeat())
        beat[-2] ^= 0x01
        (bad,) = [a for a in handler.receive(bytes(beat)) if isinstance(a, Bad)]
        self.assertEqual((bad.kind, bad.total), ("checksum", 1))
        # A length field one too long: the end byte is not where it says.
        login = bytearray(c.login())
        longer = ((len(login) - 8 + 1) << 2 | 2).to_bytes(2, "little")
        login[1:3] = longer
        login[3:5] = longer
        self.assertIn("length", self.kinds(handler, bytes(login) + b"\x00"))
        # An unknown Fn of a report asking confirmation: denied, counted.
        unknown = Frame(Control(Function.USER_DATA, uplink=True, initiator=True), ADDRESS,
                        Afn.CLASS1, Seq(3, con=True), bytes.fromhex("0000 01 1E"))
        actions = handler.receive(unknown.encode())
        self.assertEqual([a.kind for a in actions if isinstance(a, Bad)], ["unknown"])
        (denial,) = confirms(actions)
        self.assertIsInstance(services.decode_event(denial), services.Denied)
        # A time label outside its delay (sent 12:00 at the terminal one day ago, 5 min).
        stale = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True), ADDRESS,
                      Afn.LINK, Seq(4, tpv=True, con=True),
                      services.encode_unit(Afn.LINK, [0], [3], True), None, None,
                      TimeLabel(1, TimeFields(second=0, minute=0, hour=11, day=1), 5))
        self.assertEqual(self.kinds(handler, stale.encode()), ["stale"])
        # A broken multi-frame report: a middle frame without its first.
        middle = Frame(Control(Function.USER_DATA, uplink=True, initiator=True), ADDRESS,
                       Afn.CLASS3, Seq(7, fir=False, fin=False))
        self.assertEqual(self.kinds(handler, middle.encode()), ["multi-frame"])
        # Another terminal's frame; an answer to nothing asked.
        other = SimulatedConcentrator(Address("4403", 5)).heartbeat()
        self.assertEqual(self.kinds(handler, other), ["address"])
        answer = services.answer_frame(decode_frame(c.heartbeat()), b"",
                                       afn=Afn.CONFIRM)
        self.assertEqual(self.kinds(handler, answer.encode()), ["unexpected"])
        self.assertEqual(dict(handler.stats.bad), {
            "checksum": 1, "length": 1, "unknown": 1, "stale": 1, "multi-frame": 1,
            "address": 1, "unexpected": 1})
        # Still answering.
        actions = handler.receive(c.heartbeat())
        self.assertEqual(len(confirms(actions)), 1)
        self.assertEqual(handler.stats.heartbeats, 1)

    def test_a_good_frame_behind_a_bad_one_in_the_same_bytes_is_handled_at_once(self) -> None:
        # A heartbeat, a damaged one, a login: the decoder holds the error back behind the
        # first frame; the login behind the error is answered now, not when the
        # concentrator sends again (on GPRS it may never).
        c = sim()
        handler, _ = link()
        beat = bytearray(c.heartbeat())
        beat[-2] ^= 0x01
        actions = handler.receive(c.heartbeat() + bytes(beat) + c.login())
        self.assertEqual([a.kind for a in actions if isinstance(a, Bad)], ["checksum"])
        self.assertEqual(len(confirms(actions)), 2)
        self.assertEqual(actions[-1].what, "login")  # type: ignore[attr-defined]
        self.assertEqual(handler.pending(), 0)

    def test_a_time_label_within_its_delay_is_taken(self) -> None:
        handler, _ = link()
        fresh = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True), ADDRESS,
                      Afn.LINK, Seq(4, tpv=True, con=True),
                      services.encode_unit(Afn.LINK, [0], [3], True), None, None,
                      TimeLabel(1, TimeFields(second=0, minute=58, hour=11, day=1), 5))
        self.assertEqual(len(confirms(handler.receive(fresh.encode()))), 1)

    def test_frames_in_any_pieces(self) -> None:
        c = sim()
        data = c.login() + c.heartbeat() + c.heartbeat()
        handler, _ = link()
        actions = []
        for i in range(len(data)):
            actions += handler.receive(data[i : i + 1])
        self.assertEqual(len(confirms(actions)), 3)
        self.assertEqual(handler.pending(), 0)

    def test_an_event_counter_is_read_when_acd_says_so(self) -> None:
        # ACD on a login of a terminal that has read nothing: fetched from 0.
        handler, _ = link(known=None)
        login = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True, fcb_acd=True),
                      ADDRESS, Afn.LINK, Seq(0, con=True),
                      services.encode_unit(Afn.LINK, [0], [1], True), None,
                      EventCounter(0, 0))
        # EC 0 with nothing known: nothing to fetch.
        self.assertEqual(len(handler.receive(login.encode())), 2)


class LinkDetailTests(unittest.TestCase):
    def test_a_heartbeat_without_con_is_confirmed_too(self) -> None:
        handler, _ = link()
        beat = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True), ADDRESS,
                     Afn.LINK, Seq(6), services.encode_unit(Afn.LINK, [0], [3], True))
        (confirm,) = confirms(handler.receive(beat.encode()))
        self.assertEqual(confirm.seq.seq, 6)

    def test_the_fetch_wraps_past_255(self) -> None:
        handler, _ = link(known=250)
        beat = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True, fcb_acd=True),
                     ADDRESS, Afn.LINK, Seq(6, con=True),
                     services.encode_unit(Afn.LINK, [0], [3], True), None, EventCounter(3, 0))
        replies = [decode_frame(a.data) for a in handler.receive(beat.encode())
                   if isinstance(a, Reply)]
        (item,) = services.decode_units(Afn.CLASS3, replies[1].data, False)
        self.assertEqual(item.value, services.EventsRequest(250, 3))
        # The simulator reads Pm > Pn as the records from 250 round to 2.
        c = sim()
        c.events = [EventRecord(13, datetime(2024, 3, 1, 10, 0), 1, True, {"flags": 8})
                    for _ in range(259)]
        answer = decode_frame(b"".join(c.answer_bytes(replies[1])))
        (events,) = services.decode_units(Afn.CLASS3, answer.data, True)
        self.assertEqual(len(events.value.records), 9)  # 250..255, 0..2


class PointMetersTests(unittest.TestCase):
    def test_children_by_point(self) -> None:
        meters = {
            "m1": {"concentrator": "DCU1", "point": "P1"},
            "m2": {"concentrator": "DCU1", "point": "2"},
            "m3": {"concentrator": "DCU2", "point": "3"},
            "m4": {"concentrator": "DCU1", "point": "P4"},
            "m5": {"concentrator": "DCU1", "point": "P4"},
            "m6": {"concentrator": "DCU1", "point": "Px"},
        }
        self.assertEqual(point_meters("DCU1", meters), {1: "m1", 2: "m2"})

