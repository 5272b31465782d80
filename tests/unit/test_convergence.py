"""G1, G2 and G3 under random offline editing, lost replies and interleavings (see
``convergence_model``): 2 to 6 devices and the console against the in-memory model server,
which applies every mutation with ``sync.merge.apply_mutation`` as the real server does."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from convergence_model import ConvergenceMachine


class InMemoryConvergence(ConvergenceMachine):
    pass


InMemoryConvergence.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDevicesConvergeOnTheModelServer = InMemoryConvergence.TestCase
