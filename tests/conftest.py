"""Test-wide settings. Hypothesis draws new examples on every local run (it found two wrong test
tolerances this way); CI (``.ci/run``) sets ``EMMS_HYPOTHESIS_PROFILE=ci`` for a derandomised,
reproducible run, so a landing is not decided by which examples were drawn."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("EMMS_HYPOTHESIS_PROFILE", "default"))
