"""Shared fixtures. Hypothesis runs with a fixed seed profile so `make test` is repeatable."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "60")),
)
settings.register_profile("stress", deadline=None, max_examples=2000)
settings.load_profile("stress" if os.environ.get("STREAMDB_STRESS") else "ci")
