"""config.yaml and the presets validate against config/schema.yaml; bad settings name the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "config/schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def merged(preset: str) -> dict:
    """The config Snakemake sees with `--configfile preset`: the preset merged over config.yaml."""
    config = load("config.yaml")
    update_config(config, load(preset))
    return config


@pytest.mark.parametrize("preset", [None, "config/tiny.yaml", "config/paper.yaml"])
def test_config_and_presets_validate(preset):
    config = merged(preset) if preset else load("config.yaml")
    validate(config, SCHEMA)
    assert set(config["active_datasets"]) <= set(config["datasets"])


def test_schema_fills_defaults():
    config = load("config.yaml")
    validate(config, SCHEMA)
    assert config["datasets"]["ml100k"]["window_start"] is None
    assert config["datasets"]["ml100k"]["raw_dir"] is None


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("flower", "reward"), "mul", "reward"),
        (("decode", "num_beams"), 0, "num_beams"),
        (("datasets", "ml100k", "window_start"), "2015/10", "window_start"),
        (("tune", "learning_rate"), "fast", "learning_rate"),
        (("tune", "lerning_rate"), 0.1, "lerning_rate"),
    ],
)
def test_bad_setting_is_refused_naming_the_key(path, value, named):
    config = copy.deepcopy(load("config.yaml"))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(Exception) as err:
        validate(config, SCHEMA)
    assert named in str(err.value)


def test_snakemake_stops_on_a_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("flower:\n  reward: mul\n")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--configfile", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "reward" in proc.stdout + proc.stderr
