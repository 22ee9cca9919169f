"""Checks of the whole config that JSON Schema cannot express, run when the workflow is parsed.

Snakemake deletes a job's outputs before the job starts, so a setting that is only checked inside a
job (a model path that resolves nowhere, a micro batch that does not divide the batch, a NaN learning
rate) costs the finished outputs of that rule. Everything that can be decided from the config (and
from files already on disk) is checked here instead, before any job runs; each message names the key.

Imported by rules/common.smk: this module imports nothing heavy (no torch, pandas or transformers),
because the workflow parser may run in an environment without them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Beams per prompt above this are a typo, not a setting: decoding allocates batch x beams x vocabulary
# scores per step (100000 beams with SmolLM2's 49152-token vocabulary: ~20 GB for one prompt).
MAX_BEAMS = 1000

# The category files of Amazon Review Data 2018 (categoryFiles/{name}.json.gz, metaFiles2/meta_{name}.json.gz).
# A category is a file stem under results/{dataset}/raw/, so anything outside this set is a typo or a path.
AMAZON_2018_CATEGORIES = frozenset(
    {
        "AMAZON_FASHION",
        "All_Beauty",
        "Appliances",
        "Arts_Crafts_and_Sewing",
        "Automotive",
        "Books",
        "CDs_and_Vinyl",
        "Cell_Phones_and_Accessories",
        "Clothing_Shoes_and_Jewelry",
        "Digital_Music",
        "Electronics",
        "Gift_Cards",
        "Grocery_and_Gourmet_Food",
        "Home_and_Kitchen",
        "Industrial_and_Scientific",
        "Kindle_Store",
        "Luxury_Beauty",
        "Magazine_Subscriptions",
        "Movies_and_TV",
        "Musical_Instruments",
        "Office_Products",
        "Patio_Lawn_and_Garden",
        "Pet_Supplies",
        "Prime_Pantry",
        "Software",
        "Sports_and_Outdoors",
        "Tools_and_Home_Improvement",
        "Toys_and_Games",
        "Video_Games",
    }
)

# A name that becomes one folder under results/ (the schema's pattern for the keys of `datasets`).
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_-]+")

# Settings that name a file or folder of the user's (dataset folders, the distfit target file).
USER_PATH_KEYS = ("raw_dir", "import_dir")


class ConfigError(ValueError):
    """A config that would fail (or waste finished work) once jobs run; the message names the key."""


def non_finite_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys (list items as key[i]) whose value is a NaN or infinite float (YAML .nan, .inf)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from non_finite_keys(value, f"{prefix}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        yield prefix


def user_path(path: str) -> str:
    """A path as the user wrote it, in the one form every rule uses: `~` expanded, repeated and trailing
    slashes dropped (shell completion writes `path/to/split/`, which Snakemake would plan as
    `path/to/split//train.csv`, a file it then cannot find). Nothing else is rewritten (no normpath:
    `./x` stays `./x`, so the data stage's params and stats.json keep the spelling they had)."""
    path = re.sub(r"/{2,}", "/", os.path.expanduser(path))
    return path.rstrip("/") or "/"


def normalise_user_paths(config: dict) -> dict:
    """The config with every user path (datasets.*.raw_dir, datasets.*.import_dir, distfit.target)
    through user_path, in place; rules/common.smk calls it once, before any rule reads them."""
    for entry in config["datasets"].values():
        for key in USER_PATH_KEYS:
            if entry.get(key):
                entry[key] = user_path(entry[key])
    if config["distfit"].get("target"):
        config["distfit"]["target"] = user_path(config["distfit"]["target"])
    return config


# A number in scientific notation without a dot or without the exponent's sign: YAML 1.1 (PyYAML, so
# Snakemake) reads it as a string (its float needs both: 1.0e-9, 1.0e+9), and the schema then says
# "'1e-9' is not of type 'number'" without saying why.
_YAML11_STRING_NUMBER = re.compile(
    r"[-+]?(?P<mantissa>[0-9]+\.?[0-9]*|\.[0-9]+)[eE](?P<exponent>[-+]?[0-9]+)"
)


def yaml_float_spelling(text: str) -> str | None:
    """How to write `text` so that YAML 1.1 reads a float (`1e-9` -> `1.0e-9`, `2E5` -> `2.0e+5`), or None
    when `text` is no number in scientific notation."""
    match = _YAML11_STRING_NUMBER.fullmatch(text.strip())
    if not match:
        return None
    mantissa, exponent = match["mantissa"], match["exponent"]
    sign = "-" if text.strip().startswith("-") else ""
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    mantissa = f"0{mantissa}" if mantissa.startswith(".") else mantissa
    exponent = exponent if exponent[0] in "+-" else f"+{exponent}"
    return f"{sign}{mantissa}e{exponent}"


def string_numbers(node: Any, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted key, value, spelling YAML reads as a float) of every string that YAML 1.1 left a string
    but that is a number in scientific notation."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from string_numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from string_numbers(value, f"{prefix}[{i}]")
    elif isinstance(node, str) and (spelling := yaml_float_spelling(node)) is not None:
        yield prefix, node, spelling


def explain_schema_error(err: Exception, config: Mapping) -> Exception:
    """The schema's error, with a line per string-typed number in the config saying that YAML read it as
    a string and how to write it; `err` itself when there is none."""
    hints = [
        f"{key}: YAML 1.1 reads {value!r} as a string, not a number (a float needs a dot and a signed "
        f"exponent); write {spelling}"
        for key, value, spelling in string_numbers(config)
    ]
    return ConfigError(f"{err}\n  " + "\n  ".join(hints)) if hints else err


def _check_finite(config: Mapping) -> list[str]:
    return [f"{key}: {_value(config, key)} is not a finite number" for key in non_finite_keys(config)]


def _value(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.replace("[", ".[").split("."):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


def _month(value: str) -> datetime | None:
    year, month = (int(p) for p in value.split("-"))
    return datetime(year, month, 1, tzinfo=UTC) if 1 <= month <= 12 else None


def _check_datasets(config: Mapping) -> list[str]:
    """Per-source required keys, valid months, window order (only for datasets the run uses)."""
    errors = []
    used = set(config["active_datasets"]) | set(config["distfit"]["datasets"])
    for name in sorted(used & set(config["datasets"])):
        entry = config["datasets"][name]
        key = f"datasets.{name}"
        if entry["source"] == "amazon":
            errors += _check_category(key, entry.get("category"))
        if entry["source"] == "import":
            folder = entry.get("import_dir")
            if not folder:
                errors.append(
                    f"{key}.import_dir: required for source import (a folder with train/valid/test.csv)"
                )
            elif not Path(user_path(folder)).is_dir():
                errors.append(
                    f"{key}.import_dir: {folder} is not a folder ({Path(user_path(folder)).resolve()})"
                )
        months = {}
        for bound in ("window_start", "window_end"):
            if entry.get(bound):
                months[bound] = _month(entry[bound])
                if months[bound] is None:
                    errors.append(f"{key}.{bound}: {entry[bound]!r} has no month {entry[bound][-2:]}")
        start, end = months.get("window_start"), months.get("window_end")
        if start and end and start > end:
            errors.append(
                f"{key}: window_start {entry['window_start']} is after window_end {entry['window_end']}"
            )
    return errors


def _check_category(key: str, category: str | None) -> list[str]:
    """An Amazon category is one of the 2018 release's file stems (which also keeps it a plain name:
    it becomes results/{dataset}/raw/{category}.json.gz)."""
    if not category:
        return [f"{key}.category: required for source amazon (e.g. CDs_and_Vinyl)"]
    if category not in AMAZON_2018_CATEGORIES:
        return [
            f"{key}.category: {category!r} is no category of Amazon Review Data 2018; expected one of "
            + ", ".join(sorted(AMAZON_2018_CATEGORIES))
        ]
    return []


def _check_result_folders(config: Mapping) -> list[str]:
    """Settings that become a folder name under results/ stay one plain name there. The keys of
    `datasets` are checked by the schema; distfit.datasets may name any folder when distfit.target is
    set, and a converted model's name comes from its file name (results/models/{name})."""
    from flowrec.model_source import converted_name  # light: no transformers

    errors = [
        f"distfit.datasets[{i}]: {name!r} is no plain folder name (letters, digits, _ and -); it becomes "
        f"results/{name}/distfit"
        for i, name in enumerate(config["distfit"]["datasets"])
        if not _FOLDER_NAME.fullmatch(name)
    ]
    model = converted_name(config["model"]["name_or_path"])
    if model is not None and (model in ("", ".", "..") or "/" in model or "\\" in model):
        errors.append(
            f"model.name_or_path: {config['model']['name_or_path']!r} would be converted into "
            f"results/models/{model}, outside results/models/; rename the file"
        )
    return errors


def _check_batches(config: Mapping) -> list[str]:
    errors = []
    tune = config["tune"]
    if tune["batch_size"] % tune["micro_batch_size"]:
        errors.append(
            f"tune.batch_size ({tune['batch_size']}) must be a multiple of tune.micro_batch_size "
            f"({tune['micro_batch_size']})"
        )
    distfit = config["distfit"]
    if distfit["datasets"]:
        micro = distfit.get("micro_batch_size")
        if micro and distfit["batch_size"] % micro:
            errors.append(
                f"distfit.batch_size ({distfit['batch_size']}) must be a multiple of distfit.micro_batch_size ({micro})"
            )
        if distfit["batch_size"] % distfit["rl_generations"]:
            errors.append(
                f"distfit.batch_size ({distfit['batch_size']}) must be a multiple of distfit.rl_generations "
                f"({distfit['rl_generations']}, GRPO's group size)"
            )
    sasrec = config["sasrec"]
    if sasrec["hidden_size"] % sasrec["n_heads"]:
        errors.append(
            f"sasrec.hidden_size ({sasrec['hidden_size']}) must be a multiple of sasrec.n_heads ({sasrec['n_heads']})"
        )
    return errors


def catalogue_titles(dataset: str, results: str | Path = "results") -> int | None:
    """Distinct item titles of a prepared dataset (its stats.json), None while it is not prepared."""
    path = Path(results) / dataset / "data" / "stats.json"
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        return int(stats["unique_titles"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_decode(config: Mapping, results: str | Path) -> list[str]:
    decode = config["decode"]
    beams, returned = decode["num_beams"], decode["num_return"]
    errors = []
    if beams > MAX_BEAMS:
        errors.append(f"decode.num_beams: {beams} exceeds {MAX_BEAMS} (flowrec.config_checks.MAX_BEAMS)")
    if returned > beams:
        errors.append(
            f"decode.num_return ({returned}) exceeds decode.num_beams ({beams}); beam search returns at most "
            "one title per beam"
        )
    groups = config["trie"]["n_groups"]
    for dataset in config["active_datasets"]:
        titles = catalogue_titles(dataset, results)
        stats = Path(results) / dataset / "data" / "stats.json"
        if titles is not None and returned > titles:
            errors.append(
                f"decode.num_return ({returned}) exceeds the {titles} distinct titles of dataset {dataset} "
                f"({stats})"
            )
        # Only an upper bound here: the trie stage also knows which titles occur in train histories.
        if titles is not None and groups > titles:
            errors.append(
                f"trie.n_groups ({groups}) exceeds the {titles} distinct titles of dataset {dataset} "
                f"({stats}): some popularity groups would hold no title"
            )
    return errors


def _check_model(config: Mapping) -> list[str]:
    """model.name_or_path resolves: an embedded name, a .gguf file, a local folder, or a hub id that is
    cached (offline) or reachable (online: only the jobs can tell)."""
    from flowrec.model_source import hub_id_problem, resolve_model_source  # light: no transformers

    name = config["model"]["name_or_path"]
    try:
        source, gguf = resolve_model_source(name)
    except FileNotFoundError as err:
        return [f"model.name_or_path: {err}"]
    problem = None if gguf or Path(source).exists() else hub_id_problem(source)
    return [f"model.name_or_path: {problem}"] if problem else []


def _check_freeze_layers(config: Mapping) -> list[str]:
    """model.freeze_layers leaves at least one block to train, where the block count is known before any
    job runs (a model flowrec knows, or a folder with config.json); otherwise the tuning job checks it."""
    from flowrec.resources import model_shape  # light: no torch

    frozen, name = config["model"].get("freeze_layers", 0), config["model"]["name_or_path"]
    if not frozen:
        return []
    shape, origin = model_shape(name)
    if origin != "known" and not origin.endswith("config.json"):
        return []
    if frozen >= shape.layers:
        return [
            f"model.freeze_layers: {frozen}; {name} has {shape.layers} transformer blocks, "
            f"so it must be in 0..{shape.layers - 1}"
        ]
    return []


def check_config(config: Mapping, results: str | Path = "results") -> None:
    """Raise ConfigError listing every problem found (each naming its key); the config passed the schema."""
    errors = _check_finite(config)
    errors += (
        _check_datasets(config)
        + _check_result_folders(config)
        + _check_batches(config)
        + _check_decode(config, results)
    )
    errors += _check_model(config) + _check_freeze_layers(config)
    if errors:
        raise ConfigError("config:\n  " + "\n  ".join(errors))


def load_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error raises ConfigError naming the file, line and column
    (Snakemake's own message for a bad --configfile names neither: "Config file is not valid JSON or YAML")."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {err.problem or err.context}") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err


def main(argv: list[str] | None = None) -> int:
    """`python -m flowrec.config_checks [FILE ...]`: config.yaml merged with each --configfile FILE,
    checked as the workflow would (syntax with file and line, schema, then check_config)."""
    import sys

    from snakemake.utils import update_config, validate

    files = ["config.yaml", *(sys.argv[1:] if argv is None else argv)]
    try:
        config: dict = {}
        for path in files:
            update_config(config, load_yaml(path) or {})
        try:
            validate(config, str(Path(__file__).resolve().parents[2] / "config" / "schema.yaml"))
        except Exception as err:
            raise explain_schema_error(err, config) from err
        check_config(normalise_user_paths(config))
    except Exception as err:  # the schema's ValidationError names the key; ConfigError file/line or key
        print(f"{' + '.join(files)}: {err}", file=sys.stderr)
        return 1
    print(f"{' + '.join(files)}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
