"""The meter directory's lookups for modems that dial in: by the gprs: route's KEY=VALUE, by
gprs_KEY metadata, and meters added one at a time."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.directory import MeterDirectory
from fep.interfaces import IMeterDirectory
from fep.model import Meter


class InterfaceTests(unittest.TestCase):
    def test_directory_provides_its_interface(self) -> None:
        self.assertTrue(verifyObject(IMeterDirectory, MeterDirectory(None)))  # type: ignore[arg-type]


class ModemLookupTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = MeterDirectory(None)  # type: ignore[arg-type]
        self.directory.replace([
            Meter("a", "dlms", "gprs:imei=356938035643809@1"),
            Meter("b", "dlms", "gprs:imei=356938035643809@2"),
            Meter("c", "iec62056-21", "tcp:host=10.0.0.9:port=4001",
                  metadata={"gprs_iccid": "89860318760240069827"}),
            Meter("d", "dlms", "tcp:host=10.0.0.8:port=4059"),
        ])

    def test_meters_on_one_modem_in_list_order(self) -> None:
        found = self.directory.by_modem("imei=356938035643809", "serial=x")
        self.assertEqual([m.id for m in found], ["a", "b"])

    def test_metadata_names_the_modem_too(self) -> None:
        found = self.directory.by_modem("imei=1", "iccid=89860318760240069827")
        self.assertEqual([m.id for m in found], ["c"])

    def test_unknown_modem(self) -> None:
        self.assertEqual(self.directory.by_modem("imei=356938035643817"), [])

    def test_added_meter_is_found_and_a_changed_one_moves(self) -> None:
        self.directory.add(Meter("e", "dlms", "gprs:serial=KFM1", serial="KFM1"))
        self.assertEqual([m.id for m in self.directory.by_modem("serial=KFM1")], ["e"])
        self.assertEqual(self.directory.identify("KFM1").id, "e")  # type: ignore[union-attr]
        self.directory.add(Meter("a", "dlms", "gprs:imei=356938035640001"))
        self.assertEqual([m.id for m in self.directory.by_modem("imei=356938035643809")], ["b"])
        self.assertEqual([m.id for m in self.directory.by_modem("imei=356938035640001")], ["a"])
        self.assertEqual(len(self.directory), 5)
