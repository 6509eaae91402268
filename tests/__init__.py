"""fep's tests. Hypothesis runs here on a shared 2-CPU machine (CI and helpers side by side):
its timing health checks and per-example deadlines measure the machine's load, not the code,
so they are off for every test; example counts and shrinking are unchanged."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fep", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fep")
