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
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Beams per prompt above this are a typo, not a setting: decoding allocates batch x beams x vocabulary
# scores per step (100000 beams with SmolLM2's 49152-token vocabulary: ~20 GB for one prompt).
MAX_BEAMS = 1000


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
        if entry["source"] == "amazon" and not entry.get("category"):
            errors.append(f"{key}.category: required for source amazon (e.g. CDs_and_Vinyl)")
        if entry["source"] == "import":
            folder = entry.get("import_dir")
            if not folder:
                errors.append(
                    f"{key}.import_dir: required for source import (a folder with train/valid/test.csv)"
                )
            elif not Path(folder).is_dir():
                errors.append(f"{key}.import_dir: {folder} is not a folder ({Path(folder).resolve()})")
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
    for dataset in config["active_datasets"]:
        titles = catalogue_titles(dataset, results)
        if titles is not None and returned > titles:
            errors.append(
                f"decode.num_return ({returned}) exceeds the {titles} distinct titles of dataset {dataset} "
                f"({Path(results) / dataset / 'data' / 'stats.json'})"
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
    errors += _check_datasets(config) + _check_batches(config) + _check_decode(config, results)
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
        validate(config, str(Path(__file__).resolve().parents[2] / "config" / "schema.yaml"))
        check_config(config)
    except Exception as err:  # the schema's ValidationError names the key; ConfigError file/line or key
        print(f"{' + '.join(files)}: {err}", file=sys.stderr)
        return 1
    print(f"{' + '.join(files)}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
