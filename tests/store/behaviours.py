"""The behaviours every IStore must show, as a mixin run against SQLite and PostgreSQL.

A test case mixes ``StoreBehaviours`` into ``twisted.trial.unittest.TestCase`` and provides
``new_store()``: a new, unopened store on the test's database (the same database on every
call, so a second store sees what the first wrote).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from zope.interface.verify import verifyObject

from fep.errors import StoreError
from fep.interfaces import IStore
from fep.model import (
    UNITS,
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Severity,
)

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
BLOCK_START = T0.replace(microsecond=0)
RECEIVED = datetime(2024, 3, 1, 12, 0, 5, 654321, tzinfo=UTC)
ENERGY = ObisCode(1, 0, 1, 8, 0, 255)
ENERGY_EXPORT = ObisCode(1, 0, 2, 8, 0, 255)
VOLTAGE = ObisCode(1, 0, 32, 7, 0, 255)
WH = UNITS[30]
VOLT = UNITS[35]


def reading(
    value: Any = Decimal("1234.567"),
    *,
    meter: str = "m1",
    obis: ObisCode = ENERGY,
    meter_time: datetime | None = T0,
    received_time: datetime = RECEIVED,
    **kw: Any,
) -> Reading:
    return Reading(
        meter=meter,
        obis=obis,
        value=value,
        unit=kw.pop("unit", WH),
        scaler=kw.pop("scaler", 3),
        meter_time=meter_time,
        received_time=received_time,
        **kw,
    )


def block(
    start: datetime = BLOCK_START,
    values: tuple[Any, ...] = (Decimal("1.5"), Decimal("2.25"), Decimal("0")),
    **kw: Any,
) -> IntervalBlock:
    return IntervalBlock(
        meter=kw.pop("meter", "m1"),
        obis=kw.pop("obis", ENERGY),
        start=start,
        period=kw.pop("period", timedelta(minutes=15)),
        values=values,
        unit=kw.pop("unit", WH),
        scaler=kw.pop("scaler", 0),
        received_time=kw.pop("received_time", RECEIVED),
        **kw,
    )


def event(code: str = "C1", time: datetime = T0, **kw: Any) -> MeterEvent:
    return MeterEvent(
        meter=kw.pop("meter", "m1"),
        code=code,
        kind=kw.pop("kind", EventKind.POWER_OUTAGE),
        severity=kw.pop("severity", Severity.MAJOR),
        time=time,
        text=kw.pop("text", "power down"),
        received_time=kw.pop("received_time", RECEIVED),
        source=kw.pop("source", "dlms"),
    )


class StoreBehaviours:
    """Mixed into a trial TestCase that defines ``new_store()``."""

    # Provided by the concrete test case.
    dialect = ""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def opened(self) -> Any:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    async def assert_store_error(self, d: Any) -> StoreError:
        try:
            await d
        except StoreError as e:
            return e
        self.fail("no StoreError")  # type: ignore[attr-defined]
        raise AssertionError

    # -- the interface and migrations -----------------------------------------------------

    def test_provides_istore(self) -> None:
        self.assertTrue(verifyObject(IStore, self.new_store()))  # type: ignore[attr-defined]

    async def test_url_is_set(self) -> None:
        store = self.new_store()
        self.assertIsInstance(store.url, str)  # type: ignore[attr-defined]

    async def test_upgrade_on_a_fresh_database_applies_every_migration_in_order(self) -> None:
        from fep.store import migrations

        store = self.new_store()
        try:
            applied = await store.upgrade()
        finally:
            await store.close()
        self.assertEqual(applied[0], "0001_initial")  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            applied, [m.name for m in migrations.load(self.dialect)]  # type: ignore[attr-defined]
        )

    async def test_open_applies_migrations_so_upgrade_finds_nothing_pending(self) -> None:
        store = await self.opened()
        self.assertEqual(await store.upgrade(), [])  # type: ignore[attr-defined]

    async def test_reopening_keeps_data_and_applies_nothing_again(self) -> None:
        first = self.new_store()
        await first.open()
        await first.write([reading()])
        await first.close()
        second = await self.opened()
        self.assertEqual(await second.upgrade(), [])  # type: ignore[attr-defined]
        self.assertEqual(await second.count("readings"), 1)  # type: ignore[attr-defined]

    async def test_a_failing_migration_leaves_nothing_behind(self) -> None:
        from fep.store import migrations

        real = migrations.load

        def with_extra(sql: str) -> Any:
            def load(dialect: str) -> list[migrations.Migration]:
                known = real(dialect)
                version = known[-1].version + 1
                return [*known, migrations.Migration(version, f"{version:04d}_extra", sql)]

            return load

        patch = self.patch  # type: ignore[attr-defined]
        patch(migrations, "load", with_extra("CREATE TABLE half (x integer);\nSELECT nope();\n"))
        await self.assert_store_error(self.new_store().open())
        # Had the broken file left its table or its row, this would fail or apply nothing.
        patch(migrations, "load", with_extra("CREATE TABLE half (x integer);\n"))
        store = self.new_store()
        try:
            applied = await store.upgrade()
            self.assertEqual(len(applied), 1)  # type: ignore[attr-defined]
            self.assertTrue(applied[0].endswith("_extra"))  # type: ignore[attr-defined]
        finally:
            await store.close()

    async def test_close_without_open_is_harmless(self) -> None:
        store = self.new_store()
        await store.close()

    async def test_write_before_open_fails_with_store_error(self) -> None:
        store = self.new_store()
        await self.assert_store_error(store.write([reading()]))

    # -- readings -------------------------------------------------------------------------

    async def test_reading_reads_back_equal(self) -> None:
        store = await self.opened()
        r = reading(quality=Quality.ESTIMATED | Quality.DST, source="dlms", native_id="x1")
        await store.write([r])
        self.assertEqual(await store.readings("m1"), [r])  # type: ignore[attr-defined]

    async def test_decimal_value_is_exact(self) -> None:
        store = await self.opened()
        value = Decimal("123456789012345678901234.000000000001")
        await store.write([reading(value)])
        (back,) = await store.readings("m1")
        self.assertEqual(back.value, value)  # type: ignore[attr-defined]
        self.assertIs(type(back.value), Decimal)  # type: ignore[attr-defined]

    async def test_value_types_are_kept(self) -> None:
        store = await self.opened()
        values: list[Any] = [Decimal("-0.5"), 42, 10**30, "FF00 text; 'quoted'", True, False, None]
        obis = [ObisCode(1, 0, 96, 1, i, 255) for i in range(len(values))]
        await store.write([reading(v, obis=o) for v, o in zip(values, obis, strict=True)])
        back = {r.obis: r.value for r in await store.readings("m1")}
        for v, o in zip(values, obis, strict=True):
            self.assertEqual(back[o], v)  # type: ignore[attr-defined]
            self.assertIs(type(back[o]), type(v))  # type: ignore[attr-defined]

    async def test_awkward_text_round_trips(self) -> None:
        store = await self.opened()
        awkward = 'a "quoted", {braced} \\back\\slash\' NULL ü'
        r = reading("NULL", meter=awkward, source=awkward, native_id="")
        e = event(meter=awkward, code=awkward, text=awkward)
        await store.write([r, e])
        self.assertEqual(await store.readings(awkward), [r])  # type: ignore[attr-defined]
        self.assertEqual(await store.events(awkward), [e])  # type: ignore[attr-defined]

    async def test_unit_and_scaler_are_kept_and_no_unit_is_none(self) -> None:
        store = await self.opened()
        await store.write(
            [
                reading(obis=VOLTAGE, unit=VOLT, scaler=-1),
                reading(obis=ENERGY_EXPORT, unit=None, scaler=0),
            ]
        )
        back = {r.obis: r for r in await store.readings("m1")}
        self.assertEqual((back[VOLTAGE].unit, back[VOLTAGE].scaler), (VOLT, -1))  # type: ignore[attr-defined]
        self.assertIsNone(back[ENERGY_EXPORT].unit)  # type: ignore[attr-defined]

    async def test_times_keep_microseconds_and_come_back_in_utc(self) -> None:
        store = await self.opened()
        from datetime import timezone

        local = T0.astimezone(timezone(timedelta(hours=8)))
        await store.write([reading(meter_time=local)])
        (back,) = await store.readings("m1")
        self.assertEqual(back.meter_time, T0)  # type: ignore[attr-defined]
        self.assertEqual(back.meter_time.utcoffset(), timedelta(0))  # type: ignore[attr-defined]
        self.assertEqual(back.received_time, RECEIVED)  # type: ignore[attr-defined]

    async def test_reading_without_meter_time_is_filed_under_received_time(self) -> None:
        store = await self.opened()
        await store.write([reading(meter_time=None)])
        (back,) = await store.readings("m1", since=RECEIVED)
        self.assertIsNone(back.meter_time)  # type: ignore[attr-defined]
        self.assertEqual(back.time, RECEIVED)  # type: ignore[attr-defined]

    async def test_write_counts_new_rows(self) -> None:
        store = await self.opened()
        batch = [reading(obis=ObisCode(1, 0, 1, 8, t, 255)) for t in range(5)]
        self.assertEqual(await store.write(batch), 5)  # type: ignore[attr-defined]

    async def test_rewriting_a_batch_adds_nothing(self) -> None:
        store = await self.opened()
        batch = [reading(obis=ObisCode(1, 0, 1, 8, t, 255)) for t in range(5)]
        await store.write(batch)
        self.assertEqual(await store.write(batch), 0)  # type: ignore[attr-defined]
        self.assertEqual(await store.count("readings"), 5)  # type: ignore[attr-defined]

    async def test_duplicates_count_only_the_new_rows(self) -> None:
        store = await self.opened()
        await store.write([reading(), reading(obis=VOLTAGE)])
        later = T0 + timedelta(minutes=15)
        new = await store.write([reading(), reading(meter_time=later), reading(obis=VOLTAGE)])
        self.assertEqual(new, 1)  # type: ignore[attr-defined]
        self.assertEqual(await store.count("readings"), 3)  # type: ignore[attr-defined]

    async def test_duplicates_inside_one_batch_count_once(self) -> None:
        store = await self.opened()
        self.assertEqual(await store.write([reading(), reading()]), 1)  # type: ignore[attr-defined]

    async def test_replayed_reading_without_meter_clock_is_not_doubled(self) -> None:
        store = await self.opened()
        r = reading(meter_time=None)
        await store.write([r])
        self.assertEqual(await store.write([r]), 0)  # type: ignore[attr-defined]

    async def test_re_collection_with_another_value_keeps_the_first(self) -> None:
        store = await self.opened()
        await store.write([reading(Decimal("1"))])
        await store.write([reading(Decimal("2"), received_time=RECEIVED + timedelta(hours=1))])
        (back,) = await store.readings("m1")
        self.assertEqual(back.value, Decimal("1"))  # type: ignore[attr-defined]

    async def test_empty_batch_writes_nothing(self) -> None:
        store = await self.opened()
        self.assertEqual(await store.write([]), 0)  # type: ignore[attr-defined]

    async def test_readings_are_ordered_by_time_then_obis_and_per_meter(self) -> None:
        store = await self.opened()
        later = T0 + timedelta(minutes=15)
        await store.write(
            [
                reading(obis=VOLTAGE, meter_time=later),
                reading(obis=ENERGY, meter_time=later),
                reading(obis=VOLTAGE),
                reading(meter="m2"),
            ]
        )
        got = [(r.meter_time, r.obis) for r in await store.readings("m1")]
        self.assertEqual(  # type: ignore[attr-defined]
            got, [(T0, VOLTAGE), (later, ENERGY), (later, VOLTAGE)]
        )

    async def test_readings_since_is_inclusive(self) -> None:
        store = await self.opened()
        later = T0 + timedelta(minutes=15)
        await store.write([reading(), reading(meter_time=later)])
        got = [r.meter_time for r in await store.readings("m1", since=later)]
        self.assertEqual(got, [later])  # type: ignore[attr-defined]

    async def test_a_naive_since_is_refused(self) -> None:
        store = await self.opened()
        await self.assert_store_error(store.readings("m1", since=datetime(2024, 3, 1)))

    async def test_readings_filter_by_obis_in_short_form(self) -> None:
        store = await self.opened()
        await store.write([reading(), reading(obis=VOLTAGE)])
        got = [r.obis for r in await store.readings("m1", obis="32.7.0")]
        self.assertEqual(got, [VOLTAGE])  # type: ignore[attr-defined]

    async def test_readings_limit(self) -> None:
        store = await self.opened()
        await store.write([reading(meter_time=T0 + timedelta(minutes=i)) for i in range(5)])
        got = [r.meter_time for r in await store.readings("m1", limit=2)]
        self.assertEqual(got, [T0, T0 + timedelta(minutes=1)])  # type: ignore[attr-defined]

    async def test_a_failing_batch_commits_nothing(self) -> None:
        store = await self.opened()
        await self.assert_store_error(store.write([reading(), object()]))
        self.assertEqual(await store.count("readings"), 0)  # type: ignore[attr-defined]

    # -- intervals and events -------------------------------------------------------------

    async def test_interval_block_reads_back_equal(self) -> None:
        store = await self.opened()
        b = block(statuses=(Quality.OK, Quality.POWER_DOWN, Quality.OK), source="dlms")
        self.assertEqual(await store.write([b]), 3)  # type: ignore[attr-defined]
        self.assertEqual(await store.intervals("m1"), [b])  # type: ignore[attr-defined]

    async def test_overlapping_interval_blocks_add_only_new_intervals(self) -> None:
        store = await self.opened()
        first = block()
        second = block(start=first.start + 2 * first.period)
        await store.write([first])
        self.assertEqual(await store.write([second]), 2)  # type: ignore[attr-defined]
        self.assertEqual(await store.count("intervals"), 5)  # type: ignore[attr-defined]

    async def test_intervals_filter_by_obis_and_since(self) -> None:
        store = await self.opened()
        a = block()
        await store.write([a, block(obis=ENERGY_EXPORT)])
        since = a.start + a.period
        (got,) = await store.intervals("m1", obis="1-0:1.8.0*255", since=since)
        self.assertEqual((got.start, got.values), (since, a.values[1:]))  # type: ignore[attr-defined]

    async def test_event_reads_back_equal(self) -> None:
        store = await self.opened()
        e = event()
        await store.write([e])
        self.assertEqual(await store.events("m1"), [e])  # type: ignore[attr-defined]

    async def test_duplicate_events_are_ignored(self) -> None:
        store = await self.opened()
        await store.write([event(), event(code="C2")])
        new = await store.write([event(), event(time=T0 + timedelta(seconds=1))])
        self.assertEqual(new, 1)  # type: ignore[attr-defined]
        self.assertEqual(await store.count("events"), 3)  # type: ignore[attr-defined]

    async def test_events_since(self) -> None:
        store = await self.opened()
        later = T0 + timedelta(hours=1)
        await store.write([event(), event(time=later)])
        got = [e.time for e in await store.events("m1", since=later)]
        self.assertEqual(got, [later])  # type: ignore[attr-defined]

    async def test_mixed_batch_counts_every_kind(self) -> None:
        store = await self.opened()
        self.assertEqual(await store.write([reading(), block(), event()]), 5)  # type: ignore[attr-defined]

    # -- meters and counts ----------------------------------------------------------------

    async def test_meters_are_listed_by_id(self) -> None:
        store = await self.opened()
        b = Meter(
            "b",
            "iec62056_21",
            "tcp:127.0.0.1:1",
            serial="S1",
            address="01",
            credentials="key:b",
            metadata={"site": "north"},
        )
        a = Meter("a", "dlms", "tcp:127.0.0.1:2")
        self.assertEqual(await store.add_meters([b, a]), 2)  # type: ignore[attr-defined]
        got = await store.meters()
        self.assertEqual(got, [a, b])  # type: ignore[attr-defined]
        self.assertEqual(dict(got[1].metadata), {"site": "north"})  # type: ignore[attr-defined]

    async def test_add_meters_updates_an_existing_meter(self) -> None:
        store = await self.opened()
        await store.add_meters([Meter("a", "dlms", "tcp:127.0.0.1:2")])
        moved = Meter("a", "dlms", "tcp:127.0.0.1:3", metadata={"k": "v"})
        await store.add_meters([moved])
        self.assertEqual(await store.meter("a"), moved)  # type: ignore[attr-defined]
        self.assertEqual(dict((await store.meter("a")).metadata), {"k": "v"})  # type: ignore[attr-defined]
        self.assertEqual(await store.count("meters"), 1)  # type: ignore[attr-defined]

    async def test_unknown_meter_is_none(self) -> None:
        store = await self.opened()
        self.assertIsNone(await store.meter("nope"))  # type: ignore[attr-defined]

    async def test_count_of_an_unknown_table_fails(self) -> None:
        store = await self.opened()
        await self.assert_store_error(store.count("schema_migrations; drop table meters"))
