"""Pulse channels to energy and demand: constants, KYZ vs KY, rollover, restarts, missing
periods, block and rolling demand, maximum demand per billing period (by hand, and
hypothesis for the counter arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.model import IntervalBlock, ObisCode, Quality, Reading
from fep.pulse import (
    VARH,
    WH,
    CounterSample,
    DemandSettings,
    PulseChannel,
    Quantity,
    Wiring,
    block_demand,
    channel_records,
    maximum_demand,
    period_counts,
    period_demand,
    rolling_demand,
    to_decimal,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
P15 = timedelta(minutes=15)


def samples(counters: list[int], start: datetime = T0, period: timedelta = P15,
            restarted: set[int] = frozenset()) -> list[CounterSample]:  # type: ignore[assignment]
    return [CounterSample(start + i * period, c, i in restarted) for i, c in enumerate(counters)]


class ConstantAndWiringTests(unittest.TestCase):
    def test_meter_constant_in_pulses_per_kwh(self) -> None:
        ch = PulseChannel.from_constant("1", 1000)
        self.assertEqual(ch.energy(250), Fraction(250))  # 1 Wh per pulse
        ch = PulseChannel.from_constant("1", 3200)
        self.assertEqual(to_decimal(ch.energy(32)), Decimal("10"))
        self.assertEqual(to_decimal(ch.energy(1)), Decimal("0.3125"))

    def test_same_pulse_train_gives_the_same_energy_either_wiring(self) -> None:
        # 300 pulses from the meter: a KYZ input counts both transitions (600), KY one (300).
        kyz = PulseChannel.from_constant("1", 1000, wiring=Wiring.KYZ)
        ky = PulseChannel.from_constant("1", 1000, wiring=Wiring.KY)
        self.assertEqual(kyz.energy(600), ky.energy(300))
        self.assertEqual(ky.energy(300), Fraction(300))

    def test_same_count_configured_both_ways_is_a_factor_of_two_apart(self) -> None:
        kyz = PulseChannel.from_constant("1", 500, wiring=Wiring.KYZ)
        ky = PulseChannel.from_constant("1", 500, wiring=Wiring.KY)
        self.assertEqual(ky.energy(101), 2 * kyz.energy(101))
        self.assertEqual(to_decimal(kyz.energy(101)), Decimal("101"))  # 2 Wh / 2 counts

    def test_quantities_give_obis_and_units(self) -> None:
        ch = PulseChannel.from_constant("2", 1000, quantity=Quantity.REACTIVE_IMPORT)
        self.assertEqual(ch.energy_obis, ObisCode(1, 0, 3, 29, 0))
        self.assertIs(ch.quantity.energy_unit, VARH)
        self.assertIs(Quantity.ACTIVE_EXPORT.energy_unit, WH)
        self.assertEqual(Quantity.ACTIVE_EXPORT.obis_c, 2)

    def test_bad_channels_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            PulseChannel.from_constant("1", 0)
        with self.assertRaises(ValueError):
            PulseChannel("1", counter_width=0)


class PeriodCountTests(unittest.TestCase):
    ch16 = PulseChannel("1", counter_width=16)

    def test_differences_per_period(self) -> None:
        counts = period_counts(self.ch16, samples([100, 400, 1000]), P15)
        self.assertEqual([(c.start, c.counts, c.quality) for c in counts], [
            (T0, 300, Quality.OK), (T0 + P15, 600, Quality.OK)])

    def test_rollover_is_exact_and_flagged(self) -> None:
        counts = period_counts(self.ch16, samples([65400, 200]), P15)
        self.assertEqual((counts[0].counts, counts[0].quality), (336, Quality.OVERFLOW))

    def test_restart_counts_from_zero_and_is_flagged(self) -> None:
        counts = period_counts(self.ch16, samples([5000, 5300, 120], restarted={2}), P15)
        self.assertEqual(counts[1].counts, 120)
        self.assertEqual(counts[1].quality, Quality.COUNTER_RESET | Quality.POWER_DOWN)

    def test_unflagged_reset_is_no_rollover_spike(self) -> None:
        # 40000 -> 50: as a rollover that would be 25586 counts in 15 minutes.
        counts = period_counts(PulseChannel("1", counter_width=16, max_counts=5000),
                               samples([40000, 50]), P15)
        self.assertEqual(counts[0].counts, 50)
        self.assertTrue(counts[0].quality & Quality.COUNTER_RESET)

    def test_implausible_jump_up_has_no_value(self) -> None:
        counts = period_counts(PulseChannel("1", max_counts=1000), samples([0, 900, 90000]), P15)
        self.assertEqual(counts[1].counts, None)
        self.assertEqual(counts[1].quality, Quality.DATA_NOT_VALID)

    def test_periods_without_a_record_before_a_restart_are_missing(self) -> None:
        s = [CounterSample(T0, 100), CounterSample(T0 + P15, 400),
             CounterSample(T0 + 4 * P15, 70, restarted=True)]
        counts = period_counts(self.ch16, s, P15)
        self.assertEqual([c.start for c in counts], [T0 + k * P15 for k in range(4)])
        self.assertEqual([c.counts for c in counts], [300, None, None, 70])
        self.assertEqual(counts[1].quality, Quality.MISSING | Quality.POWER_DOWN)

    def test_periods_without_a_record_but_counting_on_are_shared_and_estimated(self) -> None:
        s = [CounterSample(T0, 100), CounterSample(T0 + 3 * P15, 400)]
        counts = period_counts(self.ch16, s, P15)
        self.assertEqual([c.counts for c in counts], [100, 100, 100])
        self.assertTrue(all(c.quality & Quality.ESTIMATED for c in counts))

    def test_period_ends_off_the_grid_are_not_placed(self) -> None:
        s = [CounterSample(T0, 100), CounterSample(T0 + P15 + timedelta(minutes=3), 400)]
        counts = period_counts(self.ch16, s, P15)
        self.assertTrue(all(c.counts is None for c in counts))
        self.assertTrue(counts[-1].quality & Quality.CLOCK_INVALID)

    def test_repeated_and_unordered_samples(self) -> None:
        s = samples([0, 10, 30])
        counts = period_counts(self.ch16, [s[2], s[0], s[1], s[1]], P15)
        self.assertEqual([c.counts for c in counts], [10, 20])

    @given(st.integers(1, 32).flatmap(lambda w: st.tuples(
        st.just(w), st.integers(0, 2**w - 1),
        st.lists(st.integers(0, 2 ** (w - 1)), min_size=1, max_size=40))))
    def test_rollover_never_changes_the_counts(self, case: tuple[int, int, list[int]]) -> None:
        width, start, per_period = case
        ch = PulseChannel("1", counter_width=width)
        counter = [start]
        for n in per_period:
            counter.append((counter[-1] + n) % 2**width)
        counts = period_counts(ch, samples(counter), P15)
        self.assertEqual([c.counts for c in counts], per_period)
        for c, before, after in zip(counts, counter, counter[1:], strict=False):
            self.assertEqual(bool(c.quality & Quality.OVERFLOW), after < before)

    @given(st.lists(st.tuples(st.integers(0, 5000), st.booleans(), st.integers(0, 5000)),
                    min_size=1, max_size=40))
    def test_restarts_never_make_a_spike(self, periods: list[tuple[int, bool, int]]) -> None:
        # Each period: counts before a possible restart, whether it restarted, counts after.
        ch = PulseChannel("1", counter_width=16, max_counts=10000)
        counter, s = 30000, [CounterSample(T0, 30000)]
        for i, (before, restart, after) in enumerate(periods, 1):
            counter = after if restart else (counter + before + after) % 2**16
            s.append(CounterSample(T0 + i * P15, counter, restart))
        counts = period_counts(ch, s, P15)
        for c, (before, restart, after) in zip(counts, periods, strict=True):
            true = after if restart else before + after
            self.assertIsNotNone(c.counts)
            assert c.counts is not None
            self.assertLessEqual(c.counts, before + after)
            self.assertEqual(c.counts, true)
            self.assertEqual(bool(c.quality & Quality.COUNTER_RESET), restart)


class DemandTests(unittest.TestCase):
    ch = PulseChannel.from_constant("1", 1000)  # 1 Wh per pulse, KY

    def counts(self, per_period: list[int | None]) -> list:
        from fep.pulse import PeriodCounts

        return [PeriodCounts(T0 + i * P15, None if n is None else Fraction(n),
                             Quality.MISSING if n is None else Quality.OK)
                for i, n in enumerate(per_period)]

    def test_period_demand_is_energy_over_the_period(self) -> None:
        windows = period_demand(self.ch, self.counts([300, 450]), P15)
        self.assertEqual([w.value for w in windows], [1200, 1800])  # W
        self.assertEqual(windows[0].end, T0 + P15)

    def test_block_demand_over_clock_aligned_blocks(self) -> None:
        settings = DemandSettings(period=P15, block=timedelta(minutes=30))
        windows = block_demand(self.ch, self.counts([300, 450, 600, 0, 150]), settings)
        self.assertEqual([(w.end, w.value) for w in windows], [
            (T0 + 2 * P15, 1500), (T0 + 4 * P15, 1200)])  # the unfinished block is not given

    def test_rolling_demand_slides_by_one_period(self) -> None:
        settings = DemandSettings(period=P15, rolling=3)
        windows = rolling_demand(self.ch, self.counts([300, 450, 600, 0]), settings)
        self.assertEqual([(w.end, w.value) for w in windows], [
            (T0 + 3 * P15, 1800), (T0 + 4 * P15, 1400)])

    def test_a_window_with_a_missing_period_has_no_demand(self) -> None:
        settings = DemandSettings(period=P15, rolling=2)
        windows = rolling_demand(self.ch, self.counts([300, None, 600]), settings)
        self.assertEqual([w.value for w in windows], [None, None])
        self.assertTrue(all(w.quality & Quality.MISSING for w in windows))

    def test_maximum_demand_per_billing_period_with_its_time(self) -> None:
        settings = DemandSettings(period=P15, billing_day=1)
        start = datetime(2024, 2, 29, 23, 0, tzinfo=UTC)
        from fep.pulse import PeriodCounts

        counts = [PeriodCounts(start + i * P15, Fraction(n)) for i, n in
                  enumerate([500, 700, 700, 100, 200, 900, 900, 300])]
        md = maximum_demand(period_demand(self.ch, counts, P15), settings)
        self.assertEqual([(m.billing_start, m.value, m.time) for m in md], [
            (datetime(2024, 2, 1, tzinfo=UTC), 2800, start + 2 * P15),  # the earlier tie
            (datetime(2024, 3, 1, tzinfo=UTC), 3600, start + 6 * P15),
        ])

    def test_billing_period_in_a_zone_from_its_day(self) -> None:
        settings = DemandSettings(billing_day=15, tz=ZoneInfo("Europe/Berlin"))
        self.assertEqual(settings.billing_start(datetime(2024, 3, 14, 23, 30, tzinfo=UTC)),
                         datetime(2024, 3, 14, 23, 0, tzinfo=UTC))
        self.assertEqual(settings.billing_start(datetime(2024, 1, 10, tzinfo=UTC)),
                         datetime(2023, 12, 14, 23, 0, tzinfo=UTC))

    def test_settings_are_checked(self) -> None:
        with self.assertRaises(ValueError):
            DemandSettings(period=P15, block=timedelta(minutes=20))
        with self.assertRaises(ValueError):
            DemandSettings(period=timedelta(minutes=7))
        with self.assertRaises(ValueError):
            DemandSettings(rolling=1)
        self.assertEqual(DemandSettings(block=timedelta(hours=1), rolling=3).lookback, 3)


class ChannelRecordTests(unittest.TestCase):
    def test_energy_demand_and_maximum_demand_records(self) -> None:
        ch = PulseChannel.from_constant("1", 1000, wiring=Wiring.KYZ)
        settings = DemandSettings(period=P15, block=timedelta(minutes=30), rolling=2)
        records = channel_records("rec-1", ch, samples([0, 600, 1400, 1600, 2800]), settings)
        blocks = {r.obis: r for r in records if isinstance(r, IntervalBlock)}
        energy = blocks[ObisCode(1, 0, 1, 29, 0)]
        self.assertEqual(energy.values, (Decimal(300), Decimal(400), Decimal(100), Decimal(600)))
        self.assertEqual((energy.unit, energy.period, energy.start), (WH, P15, T0))
        self.assertEqual(blocks[ObisCode(1, 0, 1, 5, 0)].values,
                         (Decimal(1200), Decimal(1600), Decimal(400), Decimal(2400)))
        block = blocks[ObisCode(1, 0, 1, 15, 0)]
        self.assertEqual((block.period, block.values), (timedelta(minutes=30),
                                                        (Decimal(1400), Decimal(1400))))
        self.assertEqual(blocks[ObisCode(1, 0, 1, 25, 0)].values,
                         (Decimal(1400), Decimal(1000), Decimal(1400)))
        self.assertEqual(blocks[ObisCode(1, 0, 1, 25, 0)].start, T0 + P15)
        md = {r.obis: r for r in records if isinstance(r, Reading)}
        self.assertEqual((md[ObisCode(1, 0, 1, 6, 0)].value, md[ObisCode(1, 0, 1, 6, 0)].time),
                         (Decimal(2400), T0 + 4 * P15))
        self.assertEqual(md[ObisCode(1, 0, 1, 16, 0)].value, Decimal(1400))
        self.assertEqual(md[ObisCode(1, 0, 1, 16, 0)].time, T0 + 2 * P15)

    def test_since_keeps_stored_intervals_out_but_feeds_windows(self) -> None:
        ch = PulseChannel.from_constant("1", 1000)
        settings = DemandSettings(period=P15, rolling=2)
        records = channel_records("rec-1", ch, samples([0, 300, 600, 1200]), settings,
                                  since=T0 + 2 * P15)
        blocks = {r.obis: r for r in records if isinstance(r, IntervalBlock)}
        self.assertEqual(blocks[ObisCode(1, 0, 1, 29, 0)].intervals(),
                         [(T0 + 2 * P15, Decimal(600), Quality.OK)])
        self.assertEqual(blocks[ObisCode(1, 0, 1, 25, 0)].values, (Decimal(1800),))

    def test_missing_periods_stay_in_the_block_flagged(self) -> None:
        ch = PulseChannel.from_constant("1", 1000, counter_width=16)
        s = [CounterSample(T0, 0), CounterSample(T0 + P15, 300),
             CounterSample(T0 + 3 * P15, 20, restarted=True)]
        records = channel_records("rec-1", ch, s, DemandSettings(period=P15))
        energy = next(r for r in records if isinstance(r, IntervalBlock))
        self.assertEqual(energy.values, (Decimal(300), None, Decimal(20)))
        self.assertEqual(energy.statuses[1], Quality.MISSING | Quality.POWER_DOWN)
