"""The meter directory with a secret store: meters get their secrets in memory (at refresh
and, fresh, at job time), never from the meter list, and a modem's secret is never taken for
one of its names."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.key_transfer import NewKeys
from fep.directory import MeterDirectory
from fep.model import Meter
from fep.store.secrets import SecretStore
from fep.store.sqlite import SqliteStore
from fep.vault import MasterKey

EK = "000102030405060708090A0B0C0D0E0F"


class DirectorySecretsTests(unittest.TestCase):
    async def test_secrets_are_resolved_in_memory(self) -> None:
        store = SqliteStore(f"{self.mktemp()}.sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        secrets = SecretStore(store, MasterKey.generate())
        await store.add_meters([Meter("m1", "dlms", "gprs:imei=356938035643809",
                                      metadata={"dlms_link": "hdlc"})])
        await secrets.put("m1", "dlms_ek", EK)
        await secrets.put("m1", "gprs_secret", "hunter2hunter2")
        directory = MeterDirectory(store, secrets)
        await directory.refresh()
        meter = directory.get("m1")
        assert meter is not None
        self.assertEqual(meter.metadata["dlms_ek"], EK)
        self.assertNotIn(EK, repr(meter))
        self.assertNotIn("hunter2", repr(meter))
        # The modem is known by its route, never by its secret.
        self.assertEqual(directory.by_modem("secret=hunter2hunter2"), [])
        self.assertEqual([m.id for m in directory.by_modem("imei=356938035643809")], ["m1"])
        # A changed secret is used by the next job, and the directory keeps it.
        await secrets.put("m1", "dlms_ek", EK.lower())
        fresh = await directory.resolve(meter)
        self.assertEqual(fresh.metadata["dlms_ek"], EK.lower())
        again = directory.get("m1")
        assert again is not None
        self.assertEqual(again.metadata["dlms_ek"], EK.lower())
        stored = await store.meter("m1")
        assert stored is not None
        self.assertEqual(dict(stored.metadata), {"dlms_link": "hdlc"})

    def test_new_keys_hide_their_values(self) -> None:
        keys = NewKeys(dlms_ek=EK)
        self.assertEqual(keys["dlms_ek"], EK)
        self.assertNotIn(EK, repr(keys) + str(keys) + repr({"new_keys": keys}))
