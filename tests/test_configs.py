"""Every YAML preset under ``configs/`` loads and validates into the one root config (``ExperimentConfig``), with
the section its command requires (``xmw transfer``: ``transfer``, ``xmw tune``: ``search``), so a preset with a
misspelt key or a bad value is caught here, not by a user's run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xmw_ray.config import ExperimentConfig, load_config
from xmw_ray.errors import XmwInputError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(CONFIGS.rglob("*.yaml"))
#: The section each command requires.
SECTION = {"train": None, "transfer": "transfer", "tune": "search"}


def command_of(path: Path) -> str:
    """The command a preset's header runs it with (``xmw COMMAND --config``)."""
    found = re.search(r"xmw (train|transfer|tune) --config", path.read_text())
    return found.group(1) if found else "train"


def test_presets_exist():
    assert {p.parent.name for p in PRESETS} == {"experiments", "tune"} and len(PRESETS) >= 9


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_validates(path):
    cfg = load_config(path, require=SECTION[command_of(path)])
    assert isinstance(cfg, ExperimentConfig)


def test_each_command_has_a_preset():
    assert {command_of(p) for p in PRESETS} == set(SECTION)


def test_a_typo_in_a_preset_is_caught(tmp_path):
    """The check above can fail: the same preset with one key misspelt is refused."""
    bad = tmp_path / "sim-temporal.yaml"
    bad.write_text((CONFIGS / "experiments" / "sim-temporal.yaml").read_text().replace("patience:", "patiense:"))
    with pytest.raises(XmwInputError, match="patiense"):
        load_config(bad)


@pytest.mark.parametrize(("command", "preset"), [("transfer", "experiments/sim-temporal.yaml"),
                                                 ("tune", "experiments/builtin-transfer.yaml")])
def test_a_command_without_its_section_is_one_line(command, preset):
    """``xmw transfer`` on a training-only file (or ``xmw tune`` on a file without ``search``) names the missing
    section, before anything starts."""
    with pytest.raises(XmwInputError, match=rf"{preset}: {SECTION[command]}: missing section"):
        load_config(CONFIGS / preset, require=SECTION[command])
