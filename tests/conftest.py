"""Hypothesis profiles for the whole suite.

``default`` is hypothesis's own default (a bounded number of examples per
test, as the normal suite runs). ``fuzz`` runs the tests marked
``@pytest.mark.fuzz`` long: ``SNAKEWAY_HYPOTHESIS_PROFILE=fuzz pytest -m fuzz``.
Fuzz tests take their number of examples from the profile only, never from a
``@settings(max_examples=...)`` of their own.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", settings())
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("SNAKEWAY_HYPOTHESIS_PROFILE", "default"))
