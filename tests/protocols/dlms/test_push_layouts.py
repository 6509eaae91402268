"""Push list layouts (etc/push-layouts, a user's directory) and unciphered pushes of meters
without keys (issue 17), decided by receiver.decide_push on published captures."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from twisted.trial import unittest

from fep.errors import ConfigError, FrameError
from fep.model import Meter
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr
from fep.protocols.dlms.layouts import (
    load_layouts,
    parse_layouts,
    shipped_directory,
    shipped_layouts,
    table_of,
)
from fep.protocols.dlms.push import decode_push
from fep.protocols.dlms.receiver import PushAccepted, PushRefused, decide_push
from tests.protocols.dlms.test_push_framing import (
    AIDON_LIST2,
    KAIFA_LIST3,
    KAMSTRUP_LIST1,
    published_apdu,
)


class ShippedLayoutTests(unittest.TestCase):
    def test_every_shipped_file_names_its_source(self) -> None:
        files = sorted(shipped_directory().glob("*.ini"))
        self.assertGreaterEqual(len(files), 3)
        for path in files:
            self.assertIn("Source:", path.read_text(), path.name)
            for layout in parse_layouts(path.read_text(), str(path)):
                self.assertTrue(layout.source, f"{path.name} [{layout.name}]")

    def test_the_norwegian_han_lists_are_shipped(self) -> None:
        table = shipped_layouts()
        self.assertEqual(
            sorted(len(x.items) for x in table.named("KFM_001")), [9, 13, 14, 18])
        self.assertIsNotNone(table.for_bare_list(None, 1))  # Kaifa list 1
        self.assertTrue(table.named("Kamstrup_V0001"))
        self.assertTrue(table.named("AIDON_V0001"))


class LayoutFileTests(unittest.TestCase):
    def test_units_with_prefixes_and_scalers(self) -> None:
        (layout,) = parse_layouts(
            "[x]\nsource = test\nidentifier = X_1\nitems =\n"
            " 1-0:1.8.0.255 kWh -2\n 1-0:32.7.0.255 V\n 0-0:1.0.0.255 date-time\n")
        energy, voltage, clock = layout.items
        self.assertEqual((energy.unit.symbol if energy.unit else None, energy.scaler), ("Wh", 1))
        self.assertEqual((voltage.scaler, clock.date_time), (0, True))

    def test_mistakes_name_the_file_section_and_item(self) -> None:
        for text, said in (
            ("[x]\nitems =\n 1-0:1.8.0.255 parsecs\n", "item 1"),
            ("[x]\nitems =\n nonsense\n", "no OBIS code"),
            ("[x]\nitems =\n", "1..512"),
            ("[x]\nitems = 1-0:1.8.0.255\ncolour = red\n", "unknown keys colour"),
            ("[x]\nitems =\n 1-0:1.8.0.255 date-time 3\n", "nothing may follow"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_layouts(text, "mine.ini")
            self.assertIn("mine.ini [x]", str(caught.exception))
            self.assertIn(said, str(caught.exception))

    def test_a_user_directory_adds_and_replaces_layouts(self) -> None:
        mine = Path(self.mktemp())
        mine.mkdir()
        (mine / "site.ini").write_text(
            "[kaifa-kfm001-list1]\nsource = ours\nitems =\n 1-0:1.7.0.255 kW\n"
            "[acme]\nsource = ours\nidentifier = ACME_1\nitems =\n 1-0:1.8.0.255 Wh\n")
        table = load_layouts([mine])
        list1 = table.for_bare_list(None, 1)
        assert list1 is not None and list1.items[0].unit is not None
        self.assertEqual((list1.source, list1.items[0].scaler), ("ours", 3))
        self.assertTrue(table.named("ACME_1"))
        self.assertEqual(len(table.named("KFM_001")), 4)  # the shipped ones stay

    def test_a_missing_user_directory_is_a_config_error(self) -> None:
        with self.assertRaises(ConfigError):
            load_layouts([Path(self.mktemp())])


class LayoutMismatchTests(unittest.TestCase):
    def test_a_list_of_a_known_identifier_but_another_length_is_a_frame_error(self) -> None:
        body = axdr.structure(axdr.octet_string(b"KFM_001"), *[axdr.double_long_unsigned(1)] * 5)
        with self.assertRaises(FrameError) as caught:
            decode_push("m", A.DataNotification(body))
        self.assertIn("'KFM_001' of 6 values matches none of its layouts", str(caught.exception))

    def test_an_own_layout_reads_an_own_list(self) -> None:
        table = table_of(parse_layouts(
            "[acme]\nidentifier = ACME_1\nitems =\n 0-0:42.0.0.255\n 1-0:1.8.0.255 kWh\n"))
        body = axdr.structure(axdr.visible_string("ACME_1"), axdr.double_long_unsigned(12))
        content = decode_push("m", A.DataNotification(body), layouts=table)
        (energy,) = [r for r in content.readings if r.unit_text]
        self.assertEqual((str(energy.obis), energy.value, energy.unit_text),
                         ("1-0:1.8.0*255", Decimal(12000), "Wh"))


KEYED = {"dlms_ek": "00" * 16, "dlms_ak": "11" * 16,
         "dlms_server_system_title": "4d4d4d0000bc614e"}


class PlainPushTests(unittest.TestCase):
    """Unciphered pushes from meters without keys: identified by the ways configured; a
    meter with keys never has one taken, whichever way names it."""

    def setUp(self) -> None:
        self.meters = {
            "kaifa": Meter("kaifa", "dlms", "tcp:host=x:port=1", serial="7340157011253544"),
            "aidon": Meter("aidon", "dlms", "tcp:host=x:port=1",
                           metadata={"dlms_push_address": "hdlc:4/65"}),
            "kamstrup": Meter("kamstrup", "dlms", "tcp:host=x:port=1",
                              serial="5706567274389702", metadata=KEYED),
        }

    def sender(self, way: str, value: str) -> Meter | None:
        for m in self.meters.values():
            if way == "address" and m.metadata.get("dlms_push_address") == value:
                return m
            if way in ("serial", "ldn") and m.serial == value:
                return m
        return None

    def decide(self, name: str, address: str | None, plain: tuple[str, ...]) -> object:
        return decide_push(
            published_apdu(name), resolve=lambda title, wport: None,
            last_received=lambda title, key: None, address=address, sender=self.sender,
            plain=plain)

    def test_by_the_serial_in_the_list(self) -> None:
        decision = self.decide(KAIFA_LIST3, "hdlc:1/0", ("serial",))
        assert isinstance(decision, PushAccepted)
        self.assertEqual(decision.meter.id, "kaifa")
        self.assertEqual({r.meter for r in decision.records}, {"kaifa"})
        self.assertEqual(len(decision.records), 17)

    def test_by_the_hdlc_address(self) -> None:
        decision = self.decide(AIDON_LIST2, "hdlc:4/65", ("address",))
        assert isinstance(decision, PushAccepted)
        self.assertEqual(decision.meter.id, "aidon")

    def test_only_the_ways_configured(self) -> None:
        decision = self.decide(AIDON_LIST2, "hdlc:4/65", ("serial",))
        assert isinstance(decision, PushRefused)
        self.assertEqual(decision.why, "unknown")
        self.assertIn("address hdlc:4/65", decision.detail)

    def test_by_default_unciphered_pushes_are_refused(self) -> None:
        decision = self.decide(KAIFA_LIST3, "hdlc:1/0", ())
        assert isinstance(decision, PushRefused)
        self.assertEqual(decision.why, "unknown")

    def test_a_meter_with_keys_named_by_its_serial_is_refused_as_a_downgrade(self) -> None:
        for plain in ((), ("serial",), ("address", "ldn", "serial")):
            decision = self.decide(KAMSTRUP_LIST1, "hdlc:16", plain)
            assert isinstance(decision, PushRefused)
            self.assertEqual(decision.why, "plain")
            self.assertEqual(decision.downgrade[0] if decision.downgrade else None, "kamstrup")

    def test_a_gprs_session_meter_without_keys_takes_its_plain_push(self) -> None:
        decision = decide_push(
            published_apdu(KAIFA_LIST3), resolve=lambda title, wport: self.meters["aidon"],
            last_received=lambda title, key: None)
        assert isinstance(decision, PushAccepted)
        self.assertEqual(decision.meter.id, "aidon")



KAMSTRUP_DK = "kamstrup_dk_push1.hex"
# A grid operator's scalers for its Danish Kamstrup meters with current transformers (an
# example of a user's own layout, not a published fact: Kamstrup's specification leaves the
# scalers to each meter's configuration).
DK_CT_LAYOUT = """
[dk-ct]
source = example: the grid operator's configuration of its CT meters
identifier = Kamstrup_V0001
select = meter
items =
    1-1:1.8.0.255   Wh
    1-1:2.8.0.255   Wh
    1-1:31.7.0.255  A  -3
    1-1:51.7.0.255  A  -3
    1-1:71.7.0.255  A  -3
    1-1:33.7.0.255  -2
"""


class DanishKamstrupListTests(unittest.TestCase):
    """The Danish Kamstrup OMNIPOWER list ("DLMS push 1", Kamstrup 5512-2584 A2 11-2019,
    section 5.2; the published capture kamstrup_dk_push1.hex) carries the Norwegian
    identifier Kamstrup_V0001 and no scalers. No Danish layout is shipped: the shipped
    Kamstrup layout gives the codes both lists share their scalers, the others are stored in
    their quantity's unit with scaler 0; a meter's own layout (``select = meter``, named by
    its ``dlms_push_layout``) comes first for that meter only."""

    def decided(self, meter: Meter, layouts: object = None) -> dict[str, object]:
        decision = decide_push(
            published_apdu(KAMSTRUP_DK), resolve=lambda title, wport: meter,
            last_received=lambda title, key: None, layouts=layouts)  # type: ignore[arg-type]
        assert isinstance(decision, PushAccepted), decision
        return {str(r.obis): (r.value, r.unit_text, r.meter_time) for r in decision.records}

    def test_the_danish_capture_with_the_shipped_layouts(self) -> None:
        from datetime import UTC, datetime

        meter = Meter("dk", "dlms", "tcp:host=x:port=1", metadata={"dlms_deviation": "-60"})
        got = self.decided(meter)
        self.assertEqual(len(got), 31)  # 32 pairs, one the clock
        when = datetime(2022, 2, 1, 8, 17, 20, tzinfo=UTC)  # 09:17:20 CET
        # Shared with the Norwegian list: its scalers (energy 0.01 kWh, current 0.01 A).
        self.assertEqual(got["1-1:1.8.0*255"], (Decimal(127676000), "Wh", when))
        self.assertEqual(got["1-1:31.7.0*255"][:2], (Decimal("909.99"), "A"))
        self.assertEqual(got["1-1:32.7.0*255"][:2], (Decimal(233), "V"))
        # Only in the Danish list: the quantity's unit, scaler 0; a power factor has none.
        self.assertEqual(got["1-1:22.7.0*255"][:2], (Decimal(448), "W"))
        self.assertEqual(got["1-1:61.8.0*255"][:2], (Decimal(6451436), "Wh"))
        self.assertEqual(got["1-1:0.0.1*255"][:2], (Decimal(26733640), None))
        self.assertEqual(got["1-1:33.7.0*255"][:2], (Decimal(2), None))

    def test_a_meter_s_own_layout_comes_first_for_that_meter_only(self) -> None:
        table = table_of([*shipped_layouts().layouts, *parse_layouts(DK_CT_LAYOUT, "dk.ini")])
        dk = Meter("dk", "dlms", "tcp:host=x:port=1",
                   metadata={"dlms_deviation": "-60", "dlms_push_layout": "dk-ct"})
        got = self.decided(dk, table)
        self.assertEqual(got["1-1:1.8.0*255"][:2], (Decimal(12767600), "Wh"))
        self.assertEqual(got["1-1:31.7.0*255"][:2], (Decimal("90.999"), "A"))
        self.assertEqual(got["1-1:33.7.0*255"][:2], (Decimal("0.02"), None))
        self.assertEqual(got["1-1:32.7.0*255"][:2], (Decimal(233), "V"))  # shipped: V
        # Another Kamstrup_V0001 meter is read with the shipped layout as before.
        other = decide_push(
            published_apdu(KAMSTRUP_LIST1), resolve=lambda title, wport: Meter(
                "no", "dlms", "tcp:host=x:port=1"),
            last_received=lambda title, key: None, layouts=table)
        assert isinstance(other, PushAccepted)
        values = {str(r.obis): r.value for r in other.records}
        self.assertEqual(values["1-1:31.7.0*255"], Decimal("5.64"))
        self.assertEqual(table.named("Kamstrup_V0001")[0].name, "kamstrup-v0001")

    def test_a_layout_name_that_is_none_refuses_naming_the_setting(self) -> None:
        meter = Meter("dk", "dlms", "tcp:host=x:port=1", metadata={"dlms_push_layout": "nope"})
        decision = decide_push(
            published_apdu(KAMSTRUP_DK), resolve=lambda title, wport: meter,
            last_received=lambda title, key: None)
        assert isinstance(decision, PushRefused)
        self.assertEqual(decision.why, "frame")
        self.assertIn("dlms_push_layout = nope", decision.detail)

    def test_select_must_be_identifier_or_meter(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_layouts(DK_CT_LAYOUT.replace("select = meter", "select = all"), "dk.ini")
        self.assertIn("dk.ini [dk-ct]: select must be identifier or meter", str(caught.exception))

    def test_a_meter_s_own_layout_is_tried_first_for_a_bare_list(self) -> None:
        # A KFM_001 list 3 (three-phase, 18 values) with the meter's own scalers for the
        # currents; another meter's list 3 still takes the shipped layout's.
        shipped = shipped_layouts().named("KFM_001")
        three = next(layout for layout in shipped if len(layout.items) == 18)
        lines = []
        for item in three.items:
            if item.obis.c in (31, 51, 71):
                lines.append(f"    {item.obis.a}-{item.obis.b}:{item.obis.c}.{item.obis.d}."
                             f"{item.obis.e}.{item.obis.f}  A  -2")
            elif item.date_time:
                lines.append(f"    {str(item.obis).replace('*', '.')}  date-time")
            else:
                unit = f"  {item.unit.symbol}  {item.scaler}" if item.unit is not None else ""
                lines.append(f"    {str(item.obis).replace('*', '.')}{unit}")
        own = parse_layouts("[kaifa-own]\nidentifier = KFM_001\nselect = meter\nitems =\n"
                            + "\n".join(lines) + "\n", "own.ini")
        table = table_of([*shipped_layouts().layouts, *own])
        mine = Meter("mine", "dlms", "tcp:host=x:port=1", metadata={"dlms_push_layout":
                                                                    "kaifa-own"})
        other = Meter("other", "dlms", "tcp:host=x:port=1")

        def current(meter: Meter) -> Decimal:
            decision = decide_push(
                published_apdu(KAIFA_LIST3), resolve=lambda title, wport: meter,
                last_received=lambda title, key: None, layouts=table)
            assert isinstance(decision, PushAccepted), decision
            return next(r.value for r in decision.records if str(r.obis) == "1-0:31.7.0*255")

        self.assertEqual(current(other), Decimal("2.191"))
        self.assertEqual(current(mine), Decimal("21.91"))
