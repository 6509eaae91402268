"""Meter key rotation as an approved command: DLMS security setup key_transfer (the new keys
wrapped with the meter's KEK) against the simulated meter, with the keys in the secret store
only. After it the meter and fep's secret store hold the new keys; a read with them works and
one with the old keys fails; no key is written in clear anywhere in the store's file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.channels.routes import Channels
from fep.collect import commands
from fep.collect.engine import CollectionEngine, approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus, Task
from fep.config import parse_config
from fep.directory import MeterDirectory
from fep.errors import FepError
from fep.model import Meter, Reading
from fep.protocols.dlms import cosem
from fep.protocols.dlms.context import DlmsContext
from fep.protocols.dlms.security import SecurityKeys, decipher_apdu
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.protocols.dlms.session import DlmsProtocol, DlmsPushDecoder
from fep.protocols.registry import meter_protocol
from fep.sim import dlms_meter
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory
from fep.store import open_store
from fep.store.counters import invocation_counters
from fep.store.secrets import SecretStore
from fep.vault import MasterKey
from tests.collect.harness import StoreSink, jobs_ended, listen
from tests.daemon.harness import wait_for
from tests.store.test_secrets import key_forms

KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F1011")[:16]
TITLE = bytes.fromhex("4D4D4D0000BC614E")


class KeyTransferCodingTests(unittest.TestCase):
    def test_keys_wrapped_with_the_kek_unwrap_on_the_meter_side(self) -> None:
        data = cosem.key_transfer_data(
            [(cosem.KeyId.GLOBAL_UNICAST_ENCRYPTION, EXAMPLE_EK),
             (cosem.KeyId.AUTHENTICATION, EXAMPLE_AK)], KEK)
        wrapped = [bytes(item[1].value) for item in data]
        self.assertTrue(all(len(w) == 24 for w in wrapped))
        self.assertNotIn(EXAMPLE_EK, b"".join(wrapped))
        self.assertEqual(cosem.unwrap_key_transfer(data, KEK),
                         [(cosem.KeyId.GLOBAL_UNICAST_ENCRYPTION, EXAMPLE_EK),
                          (cosem.KeyId.AUTHENTICATION, EXAMPLE_AK)])

    def test_a_key_wrapped_with_another_kek_is_refused(self) -> None:
        from fep.errors import FrameError

        data = cosem.key_transfer_data([(cosem.KeyId.AUTHENTICATION, EXAMPLE_AK)], KEK)
        self.assertRaises(FrameError, cosem.unwrap_key_transfer, data, bytes(16))


class SimulatedMeterKeyChangeTests(unittest.TestCase):
    """The simulated meter at a key change: as the standard has it (an invocation counter
    belongs to its key) a new encryption key makes it forget the last counters it accepted
    and count its own from 1; as many field meters, with forget_counters_on_new_key=False,
    it keeps both."""

    def factory(self, forget: bool, moved: dict[int, bytes]) -> DlmsMeterServerFactory:
        sim = dlms_meter.SimulatedDlmsMeter(kek=KEK)
        factory = DlmsMeterServerFactory(sim, ServerSettings(
            system_title=TITLE, keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK)),
            forget_counters_on_new_key=forget)
        factory.received_counters[b"FEP\x00\x00\x00\x00\x01"] = 20_001
        factory.invocation_counter = 30_001
        sim.transferred_keys.update(moved)
        factory.association_settings()
        return factory

    def test_a_new_encryption_key_starts_new_counter_sequences(self) -> None:
        factory = self.factory(True, {cosem.KeyId.GLOBAL_UNICAST_ENCRYPTION: bytes(16)})
        self.assertEqual(factory.received_counters, {})
        self.assertEqual(factory.next_counter(), 1)

    def test_a_new_authentication_key_alone_keeps_them(self) -> None:
        factory = self.factory(True, {cosem.KeyId.AUTHENTICATION: bytes(16)})
        self.assertEqual(list(factory.received_counters.values()), [20_001])
        self.assertEqual(factory.next_counter(), 30_001)

    def test_a_field_meter_keeps_them(self) -> None:
        factory = self.factory(False, {cosem.KeyId.GLOBAL_UNICAST_ENCRYPTION: bytes(16)})
        self.assertEqual(list(factory.received_counters.values()), [20_001])
        self.assertEqual(factory.next_counter(), 30_001)


class KeyTransferCommandTests(unittest.TestCase):
    timeout = 60

    async def setup_engine(self, forget_counters_on_new_key: bool = True) -> None:
        self.sim = dlms_meter.SimulatedDlmsMeter(kek=KEK)
        self.factory = DlmsMeterServerFactory(self.sim, ServerSettings(
            system_title=TITLE, keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK), allow_lowest=False),
            forget_counters_on_new_key=forget_counters_on_new_key)
        self.port = listen(self, self.factory)
        self.path = f"{self.mktemp()}.sqlite"
        store = open_store(f"sqlite:{self.path}", reactor)
        await store.open()
        self.addCleanup(store.close)
        self.store = store
        self.secrets = SecretStore(store, MasterKey.generate())
        self.meter = Meter("m1", "dlms", f"tcp:host=127.0.0.1:port={self.port}", metadata={
            "dlms_auth": "high-gmac", "dlms_client": "1", "dlms_objects": "3/1.0.1.8.0.255/2"})
        await store.add_meters([self.meter])
        for name, value in (("dlms_ek", EXAMPLE_EK), ("dlms_ak", EXAMPLE_AK),
                            ("dlms_kek", KEK)):
            await self.secrets.put("m1", name, value.hex())
        directory = MeterDirectory(store, self.secrets)
        await directory.refresh()
        # Keyed meters need the invocation counters the daemon would give them.
        counters = invocation_counters(reactor, store, self.mktemp())
        await counters.open()
        self.addCleanup(counters.close)
        self.counters = counters
        self.dlms = DlmsContext(counters)
        # Nothing needs approval by configuration: key-transfer needs it all the same.
        config = parse_config("[fep]\n[store]\n[collect]\ntimeout = 3\npoll = 0.1\n"
                              "default_task = no\napproval =\n")
        self.engine = CollectionEngine(reactor, store, StoreSink(store), directory,
                                       config.collect, node="test", endpoint_for=Channels(reactor),
                                       protocol_for=self.protocol_for)
        await self.engine.prepare()
        self.engine.scheduler.startService()
        self.addCleanup(lambda: self.engine.scheduler.stopService()
                        if self.engine.scheduler.running else None)
        self.policy = resource_policy(self.engine.settings)

    def protocol_for(self, name: str) -> Any:
        return DlmsProtocol(self.dlms) if name == "dlms" else meter_protocol(name)

    async def ended(self, command_id: int) -> Any:
        async def settled() -> bool:
            c = await self.engine.jobs.command(command_id)
            return c is not None and c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {command_id} to end", every=0.05)
        return await self.engine.jobs.command(command_id)

    async def read_with(self, ek: bytes, ak: bytes) -> list[Any]:
        meter = Meter("m1", "dlms", "tcp:", metadata={
            **self.meter.metadata, "dlms_ek": ek.hex(), "dlms_ak": ak.hex()})
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        records: list[Any] = await DlmsProtocol(self.dlms).read(reactor, endpoint, meter, 3.0)
        return records

    async def rotate(self) -> Any:
        asked = await commands.request(
            self.engine.jobs, self.meter, "key-transfer", {}, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2)
        self.assertEqual(asked.status, CommandStatus.REQUESTED)
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        return done

    async def test_rotated_keys_are_on_the_meter_and_in_the_secret_store_only(self) -> None:
        await self.setup_engine()
        done = await self.rotate()

        held = (await self.secrets.values("m1"))["m1"]
        self.assertEqual(sorted(held), ["dlms_ak", "dlms_ek", "dlms_kek"])  # no .new left
        new_ek, new_ak = bytes.fromhex(held["dlms_ek"]), bytes.fromhex(held["dlms_ak"])
        self.assertNotEqual((new_ek, new_ak), (EXAMPLE_EK, EXAMPLE_AK))
        self.assertIn("dlms_ek=", done.outcome)  # fingerprints, never the keys
        for form in key_forms(new_ek.hex()) + key_forms(new_ak.hex()):
            self.assertNotIn(form.decode("latin-1"), done.outcome + str(done.params))

        # A scheduled read (the secret store's keys, resolved at job time) works...
        await self.engine.jobs.save_task(
            Task(name="regs", kind="registers", schedule="every 1d"), reactor.seconds())
        await self.engine.scheduler.run_now("regs")
        (job,) = await jobs_ended(self.engine, 1, task="regs")
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        self.assertGreater(len(await self.store.readings("m1")), 0)
        # ...as does one with the new keys by hand; the old keys no longer open the meter.
        records = await self.read_with(new_ek, new_ak)
        self.assertTrue(any(isinstance(r, Reading) for r in records))
        with self.assertRaises(FepError):
            await self.read_with(EXAMPLE_EK, EXAMPLE_AK)

        await self.store.close()
        data = b"".join(Path(self.path + s).read_bytes() for s in ("", "-wal", "-shm")
                        if os.path.exists(self.path + s))
        for key in (new_ek, new_ak, EXAMPLE_EK, EXAMPLE_AK, KEK):
            for form in key_forms(key.hex()):
                self.assertNotIn(form, data)

    async def read_after_rotation(self, forget_counters_on_new_key: bool) -> None:
        """Our counters after a key transfer go on above the old key's, so the first read
        under the new keys is taken whether the meter starts its counters again or not."""
        await self.setup_engine(forget_counters_on_new_key)
        await self.read_with(EXAMPLE_EK, EXAMPLE_AK)
        before = max(c for _, c in self.factory.seen_counters)
        await self.rotate()
        sent = len(self.factory.seen_counters)
        held = (await self.secrets.values("m1"))["m1"]
        new_ek, new_ak = bytes.fromhex(held["dlms_ek"]), bytes.fromhex(held["dlms_ak"])
        records = await self.read_with(new_ek, new_ak)
        self.assertTrue(any(isinstance(r, Reading) for r in records))
        after = [c for _, c in self.factory.seen_counters[sent:]]
        self.assertTrue(after)
        self.assertGreater(min(after), before)
        self.assertEqual(self.factory.errors, [])

    async def test_a_meter_that_keeps_its_counters_takes_ours_after_a_rotation(self) -> None:
        # As many field meters: the last counter accepted under the old key stays.
        await self.read_after_rotation(forget_counters_on_new_key=False)

    async def test_a_meter_that_starts_its_counters_again_takes_ours_too(self) -> None:
        await self.read_after_rotation(forget_counters_on_new_key=True)

    async def test_pushes_under_the_new_key_start_a_new_sequence(self) -> None:
        """After a key transfer the meter counts its own APDUs from 1 again (the standard):
        its first push under the new key is taken, a replay of it is not, and a push under
        the old key no longer deciphers; the counter the old key reached does not block."""
        await self.setup_engine()
        sink = StoreSink(self.store)
        current: dict[str, Meter] = {}

        def resolve(title: bytes | None, wport: int) -> Meter | None:
            return current.get("m1")

        async def refresh() -> None:
            held = (await self.secrets.values("m1"))["m1"]
            current["m1"] = Meter("m1", "dlms", "tcp:", metadata={
                **self.meter.metadata, "dlms_ek": held["dlms_ek"], "dlms_ak": held["dlms_ak"],
                "dlms_system_title": TITLE.hex()})

        decoder = DlmsPushDecoder(sink, resolve, self.counters, where="push")
        await refresh()
        old_keys = ServerSettings(system_title=TITLE, keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK))
        old_server = DlmsServer(self.sim, old_keys, invocation_counter=5000)
        self.assertTrue(decoder.notification(old_server.push(self.sim.push_body())))
        self.assertEqual(decoder.stats.accepted, 1)

        await self.rotate()
        await refresh()
        new_server = DlmsServer(self.sim, self.factory.association_settings(),
                                invocation_counter=self.factory.next_counter())
        first = new_server.push(self.sim.push_body())
        assert new_server.settings.keys is not None
        self.assertEqual(decipher_apdu(first, keys=new_server.settings.keys).invocation_counter,
                         1)
        decoder.notification(first)
        self.assertEqual(decoder.stats.accepted, 2)
        self.assertFalse(decoder.notification(first))  # replayed under the new key
        self.assertEqual(decoder.stats.rejected_replay, 1)
        self.assertFalse(decoder.notification(old_server.push(self.sim.push_body())))
        self.assertEqual(decoder.stats.rejected_cipher, 1)  # the old key's push
        self.assertEqual(decoder.stats.accepted, 2)

    async def test_keys_a_lost_answer_left_on_the_meter_are_recovered(self) -> None:
        await self.setup_engine()
        # An earlier attempt reached the meter, which took the new keys; its answer was lost.
        taken_ek, taken_ak = os.urandom(16), os.urandom(16)
        await self.secrets.put("m1", "dlms_ek.new", taken_ek.hex())
        await self.secrets.put("m1", "dlms_ak.new", taken_ak.hex())
        self.factory.settings = ServerSettings(
            system_title=TITLE, keys=SecurityKeys(taken_ek, taken_ak), allow_lowest=False)
        asked = await commands.request(
            self.engine.jobs, self.meter, "key-transfer", {}, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2)
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        held = (await self.secrets.values("m1"))["m1"]
        self.assertEqual((held["dlms_ek"], held["dlms_ak"]), (taken_ek.hex(), taken_ak.hex()))
        self.assertNotIn("dlms_ek.new", held)
        records = await self.read_with(taken_ek, taken_ak)
        self.assertTrue(any(isinstance(r, Reading) for r in records))
