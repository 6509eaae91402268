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


class DanishKamstrupListTests(unittest.TestCase):
    """The Danish Kamstrup OMNIPOWER list ("DLMS push 1", Kamstrup 5512-2584 A2 11-2019,
    section 5.2) carries the Norwegian identifier Kamstrup_V0001: no Danish layout is
    shipped, the shipped Kamstrup layout gives the codes both lists share their scalers, the
    others are stored in their quantity's unit with scaler 0 (a list built in the order of
    the specification, not a capture: none complete was found published)."""

    def test_a_danish_list_without_a_layout_of_its_own(self) -> None:
        def pair(obis: str, value: axdr.Data) -> list[axdr.Data]:
            from fep.model import ObisCode

            return [axdr.octet_string(ObisCode.parse(obis).to_bytes()), value]

        body = axdr.structure(
            axdr.visible_string("Kamstrup_V0001"),
            *pair("1-1:1.8.0.255", axdr.double_long_unsigned(1234567)),
            *pair("1-1:0.0.1.255", axdr.double_long_unsigned(57065672)),
            *pair("1-1:31.7.0.255", axdr.double_long_unsigned(140)),
            *pair("1-1:21.7.0.255", axdr.double_long_unsigned(543)),
            *pair("1-1:33.7.0.255", axdr.long_unsigned(98)),
            *pair("1-1:22.8.0.255", axdr.double_long_unsigned(42)),
        )
        self.assertEqual(shipped_layouts().named("Kamstrup_V0001")[0].name, "kamstrup-v0001")
        content = decode_push("dk", A.DataNotification(body))
        got = {str(r.obis): (r.value, r.unit_text) for r in content.readings}
        # Shared with the Norwegian list: its scalers (energy 0.01 kWh, current 0.01 A).
        self.assertEqual(got["1-1:1.8.0*255"], (Decimal(12345670), "Wh"))
        self.assertEqual(got["1-1:31.7.0*255"], (Decimal("1.40"), "A"))
        # Only in the Danish list: the quantity's unit, scaler 0; a power factor has none.
        self.assertEqual(got["1-1:21.7.0*255"], (Decimal(543), "W"))
        self.assertEqual(got["1-1:22.8.0*255"], (Decimal(42), "Wh"))
        self.assertEqual(got["1-1:33.7.0*255"][0], Decimal(98))
        self.assertFalse(got["1-1:33.7.0*255"][1])
