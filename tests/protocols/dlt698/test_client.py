"""The DL/T 698.45 read client (sans-IO) against fep's simulated meter, bytes alone: readings
with units and scalers, frozen and event records, GET-Next blocks, split frames, a
terminal's login answered, pushed reports acknowledged, and bad input counted, not raised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import SessionTimeout
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Reading
from fep.protocols.dlt698.apdu import (
    LinkRequest,
    LinkResponse,
    LinkType,
    ReportNotification,
    ReportResponse,
    ResultNormal,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.client import (
    DEFAULT_METER_TZ,
    ClientSettings,
    Dlt698Client,
    Failed,
    Finished,
    Linked,
    Noise,
    ProxyRead,
    RecordRead,
    ReportReceived,
    Resent,
    Send,
    Skipped,
    link_response,
)
from fep.protocols.dlt698.data import OAD, TI, Data, DataType
from fep.protocols.dlt698.frames import Frame, FrameDecoder, Function, ServerAddress, control
from fep.sim.dlt698 import SimulatedDlt698Meter

NOW = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC, 08:53:20 on the meter's UTC+8 clock
NOW_DT = datetime.fromtimestamp(NOW, UTC)


def run(client: Dlt698Client, meter: SimulatedDlt698Meter, *, spoil: int = 0,
        extra: bytes = b"") -> list[Any]:  # fmt: skip
    """Drive ``client`` against ``meter`` until it ends; ``spoil`` damages that many
    answers, ``extra`` goes before the first answer. Every action, in order."""
    decoder = FrameDecoder()
    actions: list[Any] = list(client.start())
    pending = list(actions)
    for _ in range(200):
        if client.done:
            break
        out = b""
        for a in pending:
            if isinstance(a, Send):
                for frame in decoder.receive(a.data):
                    for answer in meter.answer(frame):
                        raw = answer.encode()
                        if spoil:
                            spoil -= 1
                            raw = raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:]
                        out += raw
        out, extra = extra + out, b""
        pending = client.receive(out) if out else client.timeout()
        actions += pending
    return actions


def settings(**kw: Any) -> ClientSettings:
    return ClientSettings(address="000000123456", **kw)


def meter(**kw: Any) -> SimulatedDlt698Meter:
    return SimulatedDlt698Meter(clock=lambda: NOW, **kw)


def readings(records: Any) -> dict[str, Reading]:
    return {r.native_id: r for r in records if isinstance(r, Reading)}


class ReadTests(unittest.TestCase):
    def test_default_items_with_units_and_scalers(self) -> None:
        sim = meter()
        client = Dlt698Client(settings(), now=lambda: NOW_DT)
        actions = run(client, sim)
        self.assertIsInstance(actions[-1], Finished)
        got = readings(client.records)
        total = got["00100201"]
        self.assertEqual(total.obis, ObisCode(1, 0, 1, 8, 0))
        self.assertEqual(total.value, Decimal(sim.energy_raw(NOW)) / 100)
        self.assertEqual(total.unit_text, "kWh")
        self.assertEqual(got["00100205"].obis, ObisCode(1, 0, 1, 8, 4))  # tariff 4
        self.assertEqual((got["20000201"].value, got["20000201"].unit_text),
                         (Decimal("220.1"), "V"))
        self.assertEqual(got["20010203"].value, Decimal("-0.250"))
        self.assertEqual((got["20040201"].obis, got["20040201"].value),
                         (ObisCode(1, 0, 16, 7, 0), Decimal("3350.0")))
        self.assertEqual(got["200A0204"].value, Decimal("-0.512"))
        self.assertEqual(got["200F0200"].value, Decimal("50.02"))
        clock = got["40000200"]
        self.assertEqual(clock.meter_time, NOW_DT)
        # The 8 default items in one GET-Request-NormalList, between CONNECT and RELEASE.
        self.assertEqual(len(sim.log), 3)
        self.assertEqual(sim.log[0], "connect")
        self.assertEqual(len(sim.log[1].split(",")), 8)
        self.assertEqual(sim.log[-1], "release")
        self.assertEqual(client.noise, 0)

    def test_items_go_in_lists_of_the_configured_size(self) -> None:
        sim = meter()
        run(Dlt698Client(settings(list_size=3)), sim)
        gets = [e for e in sim.log if e.startswith("get ")]
        self.assertEqual([len(g.split(",")) for g in gets], [3, 3, 2])

    def test_an_attribute_the_meter_lacks_is_skipped_with_its_dar(self) -> None:
        client = Dlt698Client(settings(items=(OAD(0x0010, 2), OAD(0x2017, 2), OAD(0x1234, 2))))
        actions = run(client, meter())
        skipped = [a for a in actions if isinstance(a, Skipped)]
        self.assertEqual([s.item for s in skipped], ["20170200", "12340200"])
        self.assertIn("DAR 4 (object undefined)", skipped[0].why)
        self.assertIn("00100201", readings(client.records))

    def test_without_connect_the_meter_refuses_and_each_item_is_skipped(self) -> None:
        client = Dlt698Client(settings(connect=False, items=(OAD(0x0010, 2),)))
        actions = run(client, meter())
        self.assertIn("error response 2", next(a for a in actions if isinstance(a, Skipped)).why)
        self.assertIsInstance(actions[-1], Finished)

    def test_a_meter_without_association_is_read_without_connect(self) -> None:
        sim = meter(require_connect=False)
        client = Dlt698Client(settings(connect=False, items=(OAD(0x2000, 2),)))
        run(client, sim)
        self.assertEqual(len(client.records), 3)
        self.assertNotIn("connect", sim.log)

    def test_general_password(self) -> None:
        good = Dlt698Client(settings(password="123456", items=(OAD(0x2000, 2),)))
        run(good, meter(password="123456"))
        self.assertEqual(len(good.records), 3)
        bad = Dlt698Client(settings(password="000000"))
        actions = run(bad, meter(password="123456"))
        self.assertIsInstance(actions[-1], Failed)
        self.assertIn("CONNECT refused (result 1)", str(actions[-1].error))


class RecordTests(unittest.TestCase):
    def test_day_frozen_records_by_last_n(self) -> None:
        sim = meter()
        client = Dlt698Client(settings(items=(), records=(
            RecordRead(OAD(0x5004, 2), last=2),)))  # fmt: skip
        run(client, sim)
        frozen = [r for r in client.records if isinstance(r, Reading)
                  and r.native_id == "50040200/00100201"]  # fmt: skip
        midnight = datetime(2026, 11, 30, tzinfo=DEFAULT_METER_TZ)
        self.assertEqual([r.meter_time for r in frozen],
                         [midnight.astimezone(UTC), (midnight - timedelta(days=1)).astimezone(UTC)])
        self.assertEqual(frozen[0].value, Decimal(sim.energy_raw(midnight.timestamp())) / 100)

    def test_day_frozen_records_by_time_range(self) -> None:
        start = datetime(2026, 11, 27, tzinfo=DEFAULT_METER_TZ)
        client = Dlt698Client(settings(items=(), records=(RecordRead(
            OAD(0x5004, 2), (OAD(0x2021, 2), OAD(0x0010, 2, 1)), since=start,
            until=start + timedelta(days=3)),)))  # fmt: skip
        run(client, meter())
        times = sorted(r.meter_time for r in client.records if isinstance(r, Reading))
        self.assertEqual(times, [(start + timedelta(days=n)).astimezone(UTC) for n in range(3)])

    def test_minute_frozen_records_in_next_blocks_make_one_interval_block(self) -> None:
        sim = meter(rows_per_block=3)
        client = Dlt698Client(settings(items=(), records=(RecordRead(
            OAD(0x5002, 2), (OAD(0x2021, 2), OAD(0x0010, 2, 1)),
            since=NOW_DT - timedelta(hours=2), until=NOW_DT, every=TI(1, 15)),)))
        run(client, sim)
        self.assertIn("next 1", sim.log)
        (block,) = [b for b in client.records if isinstance(b, IntervalBlock)]
        self.assertEqual(block.period, timedelta(minutes=15))
        self.assertEqual(len(block.values), 8)
        assert block.unit is not None
        self.assertEqual((block.unit.symbol, block.scaler), ("Wh", 3))  # kWh

    def test_more_blocks_than_allowed_skip_the_item(self) -> None:
        sim = meter(rows_per_block=1)
        client = Dlt698Client(settings(items=(), max_blocks=3, records=(
            RecordRead(OAD(0x5004, 2), last=1), RecordRead(OAD(0x5002, 2), since=NOW_DT
                                                           - timedelta(hours=2), until=NOW_DT))))
        actions = run(client, sim)
        skipped = [a for a in actions if isinstance(a, Skipped)]
        self.assertEqual([s.why for s in skipped], ["more than 3 blocks"])
        self.assertIsInstance(actions[-1], Finished)
        self.assertIn("50040200/00100201", readings(client.records))

    def test_power_down_events(self) -> None:
        client = Dlt698Client(settings(items=(), records=(RecordRead(OAD(0x3011, 2), last=2),)))
        run(client, meter())
        events = [e for e in client.records if isinstance(e, MeterEvent)]
        self.assertEqual([e.kind for e in events],
                         [EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED] * 2)
        self.assertEqual(events[0].text, "power down began #2")

    def test_split_frames_are_acknowledged_and_put_together(self) -> None:
        sim = meter(frame_size=40)
        client = Dlt698Client(settings(records=(RecordRead(OAD(0x5004, 2), last=1),)))
        actions = run(client, sim)
        self.assertIsInstance(actions[-1], Finished)
        self.assertIn("00100201", readings(client.records))
        self.assertIn("50040200/00100201", readings(client.records))
        self.assertEqual(client.noise, 0)


class LineTests(unittest.TestCase):
    def test_a_damaged_answer_is_asked_again(self) -> None:
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)))
        actions = run(client, meter(), spoil=1)
        self.assertEqual([type(a) for a in actions[:4]], [Send, Noise, Resent, Send])
        self.assertIsInstance(actions[-1], Finished)
        self.assertEqual(client.noise, 1)

    def test_silence_ends_in_a_timeout_naming_the_meter(self) -> None:
        client = Dlt698Client(settings(meter="m1", route="tcp:x:1", retries=1))
        client.start()
        self.assertIsInstance(client.timeout()[0], Resent)
        (failed,) = client.timeout()
        assert isinstance(failed, Failed)
        self.assertIsInstance(failed.error, SessionTimeout)
        self.assertEqual((failed.error.meter, failed.error.route, failed.error.protocol),
                         ("m1", "tcp:x:1", "dlt698"))
        self.assertIn("no valid answer to CONNECT", str(failed.error))

    def test_line_garbage_and_wakeup_bytes_are_skipped(self) -> None:
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)))
        run(client, meter(), extra=b"\xfe\xfe\xfe\xfe\x00\x68\x11")
        self.assertEqual(len(client.records), 3)
        self.assertEqual(client.line_garbage, 3)

    def test_an_esam_answer_fails_the_session(self) -> None:
        client = Dlt698Client(settings())
        client.start()
        frame = Frame(control(from_server=True), ServerAddress("000000123456"), 0,
                      bytes.fromhex("90 00 01 02 00"))
        (failed,) = client.receive(frame.encode())
        assert isinstance(failed, Failed)
        self.assertIn("ESAM", str(failed.error))


class ServerStartedTests(unittest.TestCase):
    def test_a_terminal_login_is_answered_with_feps_time(self) -> None:
        sim = meter()
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)), now=lambda: NOW_DT)
        client.start()
        actions = client.receive(sim.login(piid=3))
        sent, linked = actions[0], actions[1]
        assert isinstance(sent, Send)
        self.assertEqual(linked, Linked("login", "000000123456"))
        (frame,) = FrameDecoder().receive(sent.data)
        self.assertEqual(frame.function, Function.LINK)
        self.assertFalse(frame.client_started)
        answer = decode_apdu(frame.data)
        assert isinstance(answer, LinkResponse)
        self.assertEqual(answer.piid, 3)
        self.assertEqual(answer.result, 0x80)  # clock trusted: within 5 minutes of fep's
        self.assertEqual(answer.received_time[:7], (2026, 11, 30, 1, 8, 53, 20))
        # and the CONNECT is asked again after the login
        self.assertIsInstance(actions[2], Send)
        self.assertEqual(client.waiting_for, "CONNECT")

    def test_link_response_result_when_the_clock_is_off(self) -> None:
        request = LinkRequest(1, LinkType.HEARTBEAT, 60, (2020, 1, 1, 3, 0, 0, 0, 0))
        self.assertEqual(link_response(request, NOW_DT, DEFAULT_METER_TZ).result, 0)

    def test_a_report_is_handed_over_with_its_acknowledgement_not_acknowledged(self) -> None:
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)), now=lambda: NOW_DT)
        client.start()
        report = ReportNotification(7, (ResultNormal(OAD(0x0010, 2), Data.array(
            [Data(DataType.DOUBLE_LONG_UNSIGNED, 123456)])),))  # fmt: skip
        frame = Frame(control(from_server=True, client_started=False),
                      ServerAddress("000000123456"), 0, encode_apdu(report))
        (received,) = client.receive(frame.encode())
        assert isinstance(received, ReportReceived)
        # Nothing is sent: the records must be kept before the acknowledgement goes.
        self.assertEqual(received.records[0].value, Decimal("1234.56"))
        self.assertEqual(client.records, [])
        (ack,) = FrameDecoder().receive(received.ack)
        self.assertEqual(decode_apdu(ack.data), ReportResponse(7, (OAD(0x0010, 2),)))
        self.assertTrue(ack.function == Function.USER_DATA and not ack.client_started)
        self.assertEqual(client.waiting_for, "CONNECT")


class ProxyTests(unittest.TestCase):
    def concentrator(self) -> tuple[SimulatedDlt698Meter, list[SimulatedDlt698Meter]]:
        children = [SimulatedDlt698Meter(a, clock=lambda: NOW, start_kwh=k)
                    for a, k in (("000000000001", 100.0), ("000000000002", 200.0))]
        head = SimulatedDlt698Meter("000000009999", clock=lambda: NOW,
                                    children={c.address: c for c in children})
        return head, children

    def test_meters_behind_a_concentrator_read_in_one_proxy_request(self) -> None:
        head, children = self.concentrator()
        client = Dlt698Client(ClientSettings(address=head.address, items=(), proxies=(
            ProxyRead("000000000001", (OAD(0x0010, 2), OAD(0x2000, 2)), meter="m1"),
            ProxyRead("000000000002", (OAD(0x0010, 2),), meter="m2"))), now=lambda: NOW_DT)
        actions = run(client, head)
        self.assertIsInstance(actions[-1], Finished)
        self.assertEqual([e for e in head.log if e.startswith("proxy")],
                         ["proxy 000000000001 00100200,20000200", "proxy 000000000002 00100200"])
        totals = {r.meter: r.value for r in client.records
                  if isinstance(r, Reading) and r.native_id == "00100201"}
        self.assertEqual(totals, {"m1": Decimal(children[0].energy_raw(NOW)) / 100,
                                  "m2": Decimal(children[1].energy_raw(NOW)) / 100})
        self.assertEqual(len([r for r in client.records if r.meter == "m1"]), 8)

    def test_a_frozen_record_of_a_meter_behind_a_concentrator(self) -> None:
        head, children = self.concentrator()
        client = Dlt698Client(ClientSettings(address=head.address, items=(), proxies=(
            ProxyRead("000000000002", (), (RecordRead(OAD(0x5004, 2), last=1),)),)))
        run(client, head)
        (frozen,) = [r for r in client.records if isinstance(r, Reading)
                     and r.native_id == "50040200/00100201"]  # fmt: skip
        self.assertEqual(frozen.meter, "000000000002")
        midnight = datetime(2026, 11, 30, tzinfo=DEFAULT_METER_TZ)
        self.assertEqual(frozen.value, Decimal(children[1].energy_raw(midnight.timestamp())) / 100)

    def test_a_meter_the_concentrator_cannot_reach_is_skipped_with_its_dar(self) -> None:
        head, _ = self.concentrator()
        client = Dlt698Client(ClientSettings(address=head.address, items=(), proxies=(
            ProxyRead("000000000001", (OAD(0x2000, 2),)),
            ProxyRead("000000000077", (OAD(0x2000, 2),)))))
        actions = run(client, head)
        skipped = [a for a in actions if isinstance(a, Skipped)]
        self.assertEqual([(a.item, a.why) for a in skipped],
                         [("000000000077/20000200", "DAR 33 (request timed out)")])
        self.assertEqual({r.meter for r in client.records}, {"000000000001"})


class RobustnessTests(unittest.TestCase):
    @given(st.lists(st.binary(max_size=120), max_size=6))
    def test_no_bytes_from_the_line_raise_out_of_the_client(self, pieces: list[bytes]) -> None:
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)))
        client.start()
        for piece in pieces:
            client.receive(piece)
        client.timeout()

    @given(st.binary(max_size=200), st.sampled_from([0xC3, 0x81, 0xE3, 0x83]))
    def test_any_apdu_in_a_good_frame_is_counted_not_raised(self, apdu: bytes,
                                                             ctrl: int) -> None:  # fmt: skip
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),)))
        client.start()
        frame = Frame(ctrl, ServerAddress("000000123456"), 0, apdu)
        actions = client.receive(frame.encode())
        self.assertTrue(all(not isinstance(a, Finished) for a in actions))


class SimulatorSelectorTests(unittest.TestCase):
    def test_record_selectors_the_simulator_answers(self) -> None:
        from fep.protocols.dlt698.apdu import GetRecord
        from fep.protocols.dlt698.data import CSD, MS, RSD, selector1

        sim = meter()
        rcsd = (CSD(oad=OAD(0x2021, 2)),)
        midnight = datetime(2026, 11, 30, tzinfo=DEFAULT_METER_TZ)

        def rows(rsd: RSD) -> int:
            result = sim.read_record(GetRecord(OAD(0x5004, 2), rsd, rcsd))
            assert result.rows is not None
            return len(result.rows)

        self.assertEqual(rows(RSD(0)), 7)  # all
        self.assertEqual(rows(selector1(OAD(0x2021, 2), Data.date_time_s(midnight))), 1)
        self.assertEqual(rows(RSD(10, (3, MS(1)))), 3)  # the last 3
        self.assertEqual(rows(RSD(9, (8,))), 0)  # the 8th last of 7
        refused = sim.read_record(GetRecord(OAD(0x5004, 2), RSD(6, ()), rcsd))
        self.assertEqual(refused.dar, 3)
