"""Parse-time config checks (flowrec.config_checks): each bad setting is refused naming its key,
before Snakemake plans (and so deletes the outputs of) any job."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from flowrec.config_checks import ConfigError, check_config, load_yaml, main, non_finite_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/tiny.yaml").read_text()))
    validate(config, str(REPO / "config/schema.yaml"))
    return config


def with_value(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node[key]
    node[last] = value
    return config


def test_tiny_and_default_configs_pass(tiny, tmp_path):
    check_config(tiny, tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tune.learning_rate", float("nan"), "tune.learning_rate: nan is not a finite number"),
        ("flower.lambda", float("inf"), "flower.lambda: inf is not a finite number"),
        (
            "tune.micro_batch_size",
            3,
            r"tune.batch_size \(4\) must be a multiple of tune.micro_batch_size \(3\)",
        ),
        (
            "distfit.rl_generations",
            3,
            r"distfit.batch_size \(4\) must be a multiple of distfit.rl_generations",
        ),
        (
            "distfit.micro_batch_size",
            3,
            r"distfit.batch_size \(4\) must be a multiple of distfit.micro_batch_size",
        ),
        ("sasrec.n_heads", 3, r"sasrec.hidden_size \(16\) must be a multiple of sasrec.n_heads \(3\)"),
        ("decode.num_beams", 100000, "decode.num_beams: 100000 exceeds 1000"),
        ("decode.num_return", 5, r"decode.num_return \(5\) exceeds decode.num_beams \(4\)"),
        ("model.name_or_path", "/no/such/model", "model.name_or_path: model `/no/such/model`: no such file"),
        ("model.name_or_path", "./missing.gguf", "model.name_or_path: .*no such GGUF file"),
        (
            "model.freeze_layers",
            2,
            r"model.freeze_layers: 2; tiny-random has 2 transformer blocks, so it must be in 0..1",
        ),
        # a hub id that is not cached, offline (tests/conftest.py sets HF_HUB_OFFLINE=1)
        (
            "model.name_or_path",
            "nowhere/model",
            "model.name_or_path: `nowhere/model` is no local file .* HF_HUB_OFFLINE",
        ),
    ],
)
def test_bad_setting_is_refused_naming_the_key(tiny, tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(with_value(tiny, key, value), tmp_path)


def test_non_finite_values_in_lists_are_found():
    assert list(non_finite_keys({"a": [1.0, float("nan")], "b": {"c": float("-inf")}})) == ["a[1]", "b.c"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"source": "import", "import_dir": None}, "datasets.ml100k.import_dir: required for source import"),
        (
            {"source": "import", "import_dir": "/no/such/dir"},
            "datasets.ml100k.import_dir: /no/such/dir is not a folder",
        ),
        ({"source": "amazon", "category": None}, "datasets.ml100k.category: required for source amazon"),
        ({"window_start": "1998-13"}, "datasets.ml100k.window_start: '1998-13' has no month 13"),
        (
            {"window_start": "1998-05", "window_end": "1998-04"},
            "window_start 1998-05 is after window_end 1998-04",
        ),
    ],
)
def test_dataset_entries_are_checked_per_source(tiny, tmp_path, entry, message):
    config = copy.deepcopy(tiny)
    config["datasets"]["ml100k"].update(entry)
    with pytest.raises(ConfigError, match=message):
        check_config(config, tmp_path)


def test_num_return_is_checked_against_the_prepared_catalogue(tiny, tmp_path):
    stats = tmp_path / "ml100k" / "data" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"unique_titles": 3}))
    with pytest.raises(
        ConfigError, match=r"decode.num_return \(4\) exceeds the 3 distinct titles of dataset ml100k"
    ):
        check_config(tiny, tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  batch_size: 4\n   micro_batch_size: 2\n")
    with pytest.raises(ConfigError, match=rf"{bad}:3:\d+: YAML syntax error"):
        load_yaml(bad)
    assert main([str(bad)]) == 1


def test_snakemake_refuses_a_nan_before_planning_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  learning_rate: .nan\n")
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("snakemake")),
            "-n",
            "--configfile",
            "config/tiny.yaml",
            str(bad),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "tune.learning_rate: nan is not a finite number" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout
