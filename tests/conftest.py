"""Suite-wide test settings: the hypothesis profiles.

Two profiles, chosen by the environment variable ``SNAKEWAY_HYPOTHESIS_PROFILE``:

- ``default`` (when the variable is unset): hypothesis's own defaults, so that ``make test`` stays quick,
  but for its deadline: how long an example takes is not what a test here asserts (speed is measured in
  ``benchmarks/``), and on a busy machine a parse of a large random configuration can take over 200 ms.
  Every fuzz test (``@pytest.mark.fuzz``) runs with it too, a bounded number of examples each.
- ``fuzz``: what ``make fuzz`` selects, for the ``fuzz``-marked tests: many more examples, no deadline (a
  slow example is not a failure there; an exception or a broken property is).

A fuzz test therefore never sets ``max_examples`` itself: it takes its example count from the profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "SNAKEWAY_HYPOTHESIS_PROFILE"

settings.register_profile("default", settings.get_profile("default"), deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get(PROFILE_VARIABLE) or "default")
