"""fep's tests (twisted.trial).

Hypothesis runs under one profile: the suite shares two CPUs with parallel trial workers and
subprocess peers, so input generation may be slow for reasons that say nothing about the code
under test; its speed is not what these tests check (timing goals live in fep.bench), so the
too-slow health check and per-example deadlines are off. Every other health check stays on.

Child Pythons the tests start keep their compiled bytecode in a cache of their own when
``PYTHONDONTWRITEBYTECODE`` is set (`tests.processes.share_child_bytecode`).
"""

from hypothesis import HealthCheck, settings

from tests.processes import share_child_bytecode

share_child_bytecode()

settings.register_profile(
    "fep", suppress_health_check=[HealthCheck.too_slow], deadline=None
)
settings.load_profile("fep")
