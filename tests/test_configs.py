"""Every YAML preset under ``configs/`` loads and validates into the config class its command reads, so a preset
with a misspelt key or a bad value is caught here, not by a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xmw_ray.config import TrainConfig, load_config
from xmw_ray.transfer.config import ExperimentConfig
from xmw_ray.tune.config import TuneConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(CONFIGS.rglob("*.yaml"))


def config_class(path: Path) -> type:
    """The class of the command that reads ``path``: ``xmw tune`` for configs/tune, ``xmw transfer`` for an
    experiment with strategies, ``xmw train`` otherwise."""
    if path.parent.name == "tune":
        return TuneConfig
    return ExperimentConfig if "strategies" in (yaml.safe_load(path.read_text()) or {}) else TrainConfig


def test_presets_exist():
    assert {p.parent.name for p in PRESETS} == {"experiments", "tune"} and len(PRESETS) >= 9


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_validates(path):
    cfg = load_config(path, cls=config_class(path))
    assert isinstance(cfg, config_class(path))


def test_a_typo_in_a_preset_is_caught(tmp_path):
    """The check above can fail: the same preset with one key misspelt is refused."""
    from xmw_ray.errors import XmwInputError

    bad = tmp_path / "sim-temporal.yaml"
    bad.write_text((CONFIGS / "experiments" / "sim-temporal.yaml").read_text().replace("patience:", "patiense:"))
    with pytest.raises(XmwInputError, match="patiense"):
        load_config(bad, cls=config_class(bad))
