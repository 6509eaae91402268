"""Q/GDW 1376.1 services: the published frames decoded into typed events and built again
byte for byte by fep's request/answer builders; the data unit layouts (class 1, class 2,
events, archive, forwarding, control) on hand-laid bytes; records of the answers."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import attrs
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import EventKind, MeterEvent, ObisCode, Reading, Severity
from fep.protocols.dlt645 import dataid
from fep.protocols.dlt645 import services as dlt645
from fep.protocols.dlt645.frames import decode_frame as decode_dlt645
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.formats import Clock, TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Control,
    Frame,
    Function,
    Seq,
    TimeLabel,
    decode_frame,
)
from fep.protocols.gw3761.records import RecordMapper
from fep.protocols.gw3761.services import (
    ArchiveEntry,
    ConfirmItem,
    Data,
    Events,
    EventsRequest,
    ForwardAnswer,
    ForwardRequest,
    Frozen,
    Indications,
    Item,
    Master,
    Trip,
    UnknownFn,
    decode_event,
    decode_units,
    encode_unit,
)
from tests.protocols.gw3761.published import FRAMES


def event(name: str) -> services.Event:
    return decode_event(decode_frame(FRAMES[name]))


class PublishedEventTests(unittest.TestCase):
    def test_logins_and_heartbeats(self) -> None:
        for name in ("iteye_login", "node_login", "lora_login"):
            self.assertIsInstance(event(name), services.Login, name)
        for name in ("node_heartbeat", "cpp_heartbeat"):
            self.assertIsInstance(event(name), services.Heartbeat, name)

    def test_master_confirmation_is_built_byte_for_byte(self) -> None:
        # node_login_confirm answers node_login: C 0B, AFN 00 F1, the login's sequence.
        login = decode_frame(FRAMES["node_login"])
        confirm = Master(login.address).confirm(login)
        self.assertEqual(confirm.encode(), FRAMES["node_login_confirm"])
        self.assertIsInstance(event("node_login_confirm"), services.Confirmed)

    def test_item_by_item_confirmation_of_a_heartbeat(self) -> None:
        confirmed = event("cpp_heartbeat_confirm")
        assert isinstance(confirmed, services.Confirmed)
        self.assertEqual(confirmed.items, (ConfirmItem(0, 3, 0),))
        beat = decode_frame(FRAMES["cpp_heartbeat"])
        built = Frame(Control(Function.LINK_STATUS, uplink=False, initiator=False), beat.address,
                      Afn.CONFIRM, Seq(beat.seq.seq),
                      services.confirm_data(Afn.LINK, [ConfirmItem(0, 3, 0)]))  # fmt: skip
        self.assertEqual(built.encode(), FRAMES["cpp_heartbeat_confirm"])

    def test_denial(self) -> None:
        self.assertIsInstance(event("lora_deny"), services.Denied)

    def test_class1_clock_request_and_answer_built_byte_for_byte(self) -> None:
        request = decode_frame(FRAMES["android_class1_clock_request"])
        master = Master(request.address)
        built = master.request(Afn.CLASS1, encode_unit(Afn.CLASS1, [0], [2], False), con=True)
        # The tool sends class 1 reads with function 10 (request class 1 data).
        built = attrs.evolve(built, control=attrs.evolve(built.control, function=10))
        self.assertEqual(built.encode(), FRAMES["android_class1_clock_request"])
        answer = event("lora_class1_clock_answer")
        assert isinstance(answer, Data)
        (item,) = answer.items
        self.assertEqual(item.value, Clock(datetime(2018, 10, 7, 23, 20, 51), 0))
        raw = decode_frame(FRAMES["lora_class1_clock_answer"])
        rebuilt = attrs.evolve(raw, data=encode_unit(Afn.CLASS1, [0], [2], True,
                                                     {(0, 2): item.value}))  # fmt: skip
        self.assertEqual(rebuilt.encode(), FRAMES["lora_class1_clock_answer"])

    def test_class1_f129_request_of_one_point(self) -> None:
        request = event("wireshark_class1_f129_request")
        assert isinstance(request, Data)
        self.assertEqual(request.items, (Item(2, 129, None),))
        (unit,) = services.request_units(Afn.CLASS1, [2], [129])
        self.assertEqual(decode_frame(FRAMES["wireshark_class1_f129_request"]).data, unit)

    def test_reset_with_pw_and_time_label(self) -> None:
        frame = decode_frame(FRAMES["wireshark_reset_data_area"])
        self.assertEqual((frame.afn, frame.pw, frame.tp),
                         (Afn.RESET, bytes(16), TimeLabel(0xC1, TimeFields(
                             day=17, hour=10, minute=58, second=37), 0)))  # fmt: skip
        master = Master(frame.address, pfc=0xC1, delay=0)
        built = master.request(Afn.RESET, encode_unit(Afn.RESET, [0], [2], False),
                               now=TimeFields(day=17, hour=10, minute=58, second=37))
        self.assertEqual(built.encode(), FRAMES["wireshark_reset_data_area"])

    def test_events_request(self) -> None:
        request = event("android_class3_events_request")
        assert isinstance(request, Data)
        self.assertEqual(request.items, (Item(0, 2, EventsRequest(0, 0xFF)),))
        again = encode_unit(Afn.CLASS3, [0], [2], False, {(0, 2): EventsRequest(0, 0xFF)})
        self.assertEqual(decode_frame(FRAMES["android_class3_events_request"]).data, again)

    def test_forwarded_dlt645_read_and_its_answer(self) -> None:
        request = event("node_forward_read")
        assert isinstance(request, Data)
        ask = request.items[0].value
        self.assertEqual((ask.port, ask.baud, ask.parity, ask.frame_timeout), (31, 2400, "E", 60))
        meter_request = decode_dlt645(ask.payload)
        self.assertEqual(meter_request.address, "151230011061")
        self.assertEqual(meter_request.data[:4], (0x00010000).to_bytes(4, "little"))
        # Built again from the typed request: the same data unit.
        unit = encode_unit(Afn.FORWARD, [0], [1], False, {(0, 1): ask})
        self.assertEqual(decode_frame(FRAMES["node_forward_read"]).data, unit)
        answer = event("node_forward_read_answer")
        assert isinstance(answer, Data)
        forwarded = answer.items[0].value
        self.assertIsInstance(forwarded, ForwardAnswer)
        read = dlt645.decode_read(decode_dlt645(forwarded.payload), 0x00010000)
        (reading,) = dataid.decode(0x00010000, read.data, meter="151230011061")
        self.assertEqual(reading.value, Decimal("6.78"))  # kWh, forward active total

    def test_forwarded_relay_command(self) -> None:
        answer = event("node_forward_trip_answer")
        assert isinstance(answer, Data)
        meter_answer = decode_dlt645(answer.items[0].value.payload)
        self.assertEqual(meter_answer.control, 0x9C)  # relay control, normal answer


class LayoutTests(unittest.TestCase):
    def test_f129_current_forward_active_energy(self) -> None:
        # Hand-laid per clause 5.12 F129: read time A.15, M = 1, total and tariff 1 (A.14).
        unit = bytes.fromhex("0101 0110" "3014240709" "01" "7856341200" "0000100000")
        (item,) = decode_units(Afn.CLASS1, unit, True)
        self.assertEqual(item.point, 1)
        self.assertEqual(item.value, Indications(datetime(2009, 7, 24, 14, 30),
                                                 (Decimal("1234.5678"), Decimal("10.0000"))))
        self.assertEqual(encode_unit(Afn.CLASS1, [1], [129], True, {(1, 129): item.value}), unit)

    def test_f161_daily_frozen(self) -> None:
        unit = bytes.fromhex("0101 0114" "240709" "0100240709" "00" "7856341200")
        (item,) = decode_units(Afn.CLASS2, unit, True)
        self.assertEqual(item.value, Frozen(date(2009, 7, 24), Indications(
            datetime(2009, 7, 24, 0, 1), (Decimal("1234.5678"),))))  # fmt: skip
        self.assertEqual(encode_unit(Afn.CLASS2, [1], [161], True, {(1, 161): item.value}), unit)

    def test_request_of_several_points_and_classes_in_one_identifier(self) -> None:
        (unit,) = services.request_units(Afn.CLASS2, [1, 2], [161, 162], date(2009, 7, 24))
        self.assertEqual(unit[:4], bytes.fromhex("0301 0314"))
        items = decode_units(Afn.CLASS2, unit, False)
        self.assertEqual([(i.point, i.fn) for i in items],
                         [(1, 161), (1, 162), (2, 161), (2, 162)])  # fmt: skip

    def test_erc14_and_erc13_records(self) -> None:
        # Hand-laid per clause 5.14 / appendix: EC1 EC2 Pm Pn, then ERC Le data.
        unit = bytes.fromhex(
            "0000 0100" "02 00 00 02"
            "0E 0A" "3014240709" "4514240709"
            "0D 08" "0015240709" "0180" "08"
        )
        (item,) = decode_units(Afn.CLASS3, unit, True)
        events = item.value
        assert isinstance(events, Events)
        off, fault = events.records
        self.assertEqual((off.erc, off.time), (14, datetime(2009, 7, 24, 14, 30)))
        self.assertEqual(off.fields["restored"], datetime(2009, 7, 24, 14, 45))
        self.assertEqual((fault.erc, fault.point, fault.start), (13, 1, True))
        self.assertEqual(encode_unit(Afn.CLASS3, [0], [1], True, {(0, 1): events}), unit)
        mapper = RecordMapper("DCU1", {1: "M1"})
        records = mapper.records(Data(Address("4403", 4), Afn.CLASS3, (item,)))
        got = [(r.meter, r.kind, r.severity) for r in records if isinstance(r, MeterEvent)]
        self.assertEqual(got,
                         [("DCU1", EventKind.POWER_OUTAGE, Severity.MAJOR),
                          ("DCU1", EventKind.POWER_RESTORED, Severity.INFO),
                          ("M1", EventKind.METER_ERROR, Severity.MAJOR)])  # fmt: skip

    def test_unknown_erc_is_kept_as_bytes(self) -> None:
        record = services.decode_event_record(99, bytes.fromhex("3014240709AABB"))
        self.assertEqual(record.time, datetime(2009, 7, 24, 14, 30))
        self.assertEqual(services.encode_event_record(record)[2:], bytes.fromhex("3014240709AABB"))

    def test_archive_entry_is_27_bytes_and_round_trips(self) -> None:
        entry = ArchiveEntry(1, 1, 2, "000000123456", 30, 9600, bytes(6), 4, 6, 2,
                             "000000000000", 0x12)  # fmt: skip
        raw = services.encode_archive_entry(entry)
        self.assertEqual(len(raw), 27)
        self.assertEqual(raw[4], 6 << 5 | 2)  # 9600 baud, port 2
        (item,) = decode_units(Afn.SET_PARAMETERS, encode_unit(
            Afn.SET_PARAMETERS, [0], [10], False, {(0, 10): (entry,)}), False)  # fmt: skip
        self.assertEqual(item.value, (entry,))

    def test_archive_count_beyond_the_data_is_refused(self) -> None:
        with self.assertRaises(FrameError):
            decode_units(Afn.QUERY_PARAMETERS, bytes.fromhex("0000 0201 FFFF"), True)

    def test_control_clock_set_and_trip(self) -> None:
        when = Clock.of(datetime(2024, 3, 1, 16, 0))
        unit = encode_unit(Afn.CONTROL, [0], [31], False, {(0, 31): when})
        self.assertEqual(decode_units(Afn.CONTROL, unit, False)[0].value, when)
        unit = encode_unit(Afn.CONTROL, [1], [1], False, {(1, 1): Trip(2, 4)})
        self.assertEqual(unit[4], 0x24)

    def test_unknown_fn_stops_the_frame(self) -> None:
        with self.assertRaises(UnknownFn) as caught:
            decode_units(Afn.CLASS1, bytes.fromhex("0000 801D"), True)
        self.assertEqual((caught.exception.afn, caught.exception.fn), (Afn.CLASS1, 240))

    def test_short_data_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            decode_units(Afn.CLASS1, bytes.fromhex("0101 0110 3014"), True)


class MasterTests(unittest.TestCase):
    def test_requests_count_pfc_and_carry_pw_and_tp(self) -> None:
        master = Master(Address("4403", 4), pfc=15, delay=5)
        now = TimeFields(day=1, hour=16, minute=0, second=0)
        first = master.request(Afn.FORWARD, b"", now=now)
        second = master.request(Afn.CLASS1, b"", now=now)
        self.assertEqual((first.seq.seq, second.seq.seq), (15, 0))
        self.assertEqual(first.pw, bytes(16))
        self.assertIsNone(second.pw)
        self.assertEqual(first.tp, TimeLabel(15, now, 5))
        self.assertEqual(decode_frame(first.encode()), first)

    def test_forward_request_settings_round_trip(self) -> None:
        ask = ForwardRequest(2, b"\x68", 9600, "O", 7, 2, 0.5, 0.05)
        unit = encode_unit(Afn.FORWARD, [0], [1], False, {(0, 1): ask})
        self.assertEqual(decode_units(Afn.FORWARD, unit, False)[0].value, ask)


class RecordTests(unittest.TestCase):
    def test_indications_become_readings_of_the_points_meter(self) -> None:
        value = Indications(datetime(2009, 7, 24, 14, 30), (Decimal("1234.5678"), None))
        mapper = RecordMapper("DCU1", {1: "M1"})
        (reading,) = mapper.records(Data(Address("4403", 4), Afn.CLASS1, (Item(1, 129, value),)))
        assert isinstance(reading, Reading)
        self.assertEqual((reading.meter, reading.obis, reading.value, reading.unit_text),
                         ("M1", ObisCode(1, 0, 1, 8, 0), Decimal("1234.5678"), "kWh"))  # fmt: skip
        self.assertEqual(reading.meter_time, datetime.fromisoformat("2009-07-24T06:30+00:00"))
        self.assertEqual((reading.source, reading.native_id), ("DCU1", "0C:F129"))


class EditionTests(unittest.TestCase):
    def test_heartbeat_with_and_without_the_terminal_clock(self) -> None:
        beat = decode_frame(FRAMES["node_heartbeat"])
        self.assertEqual(decode_event(beat), services.Heartbeat(beat.address))
        clock = Clock(datetime(2018, 10, 7, 23, 20, 51), 7)
        with_clock = attrs.evolve(beat, data=encode_unit(Afn.LINK, [0], [3], True,
                                                         {(0, 3): clock}))  # fmt: skip
        self.assertEqual(decode_event(decode_frame(with_clock.encode())),
                         services.Heartbeat(beat.address, clock))  # fmt: skip

    def test_address_text_forms(self) -> None:
        self.assertEqual(Address.parse("4403:0004"), Address("4403", 4))
        self.assertEqual(Address.parse("0200:#4660"), Address("0200", 0x1234))
        self.assertEqual(str(Address("0200", 0x1234)), "0200:1234")
        self.assertRaises(ValueError, Address.parse, "4403")
        self.assertRaises(ValueError, Address.parse, "44A3:0001")

    def test_archive_baud_code_zero_is_the_ports_default(self) -> None:
        entry = ArchiveEntry(1, 1, 31, "000000123456", baud=0)
        raw = services.encode_archive_entry(entry)
        self.assertEqual(raw[4], 31)
        self.assertRaises(ValueError, services.encode_archive_entry,
                          attrs.evolve(entry, baud=300))  # fmt: skip
