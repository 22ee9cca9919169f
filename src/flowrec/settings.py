"""Config blocks -> settings objects. config/schema.yaml is the one source of defaults.

Every stage's settings are a dataclass without defaults of its own; `settings_from_block` fills the
keys a block leaves out from the schema, rejects keys the dataclass does not know (naming the block
and the key), and maps config keys that are Python keywords (`lambda`) to their field (`lambda_`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import keyword
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

T = TypeVar("T")


@functools.cache
def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The JSON Schema of the config (config/schema.yaml), parsed once."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def block_schema(section: str) -> dict:
    """The schema node of a config block: 'tune', 'flower', or 'datasets.*' (one dataset's entry)."""
    node = load_schema()
    for part in section.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def block_defaults(section: str) -> dict[str, Any]:
    """{key: default} of every key of `section` that has one in the schema."""
    properties = block_schema(section).get("properties", {})
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def field_name(key: str) -> str:
    """The dataclass field of a config key: keywords get a trailing underscore (lambda -> lambda_)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def config_key(field: str) -> str:
    """Inverse of field_name."""
    return field[:-1] if field.endswith("_") and keyword.iskeyword(field[:-1]) else field


def settings_from_block(cls: type[T], block: Mapping[str, Any] | None, section: str | None = None) -> T:
    """`cls` built from a config block, missing keys taken from the schema defaults of `section`.

    Keys of the block that are no field of `cls` raise a ValueError naming the block and the keys;
    a field that neither the block nor the schema gives raises too (no silent default in code).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    given = {field_name(k): v for k, v in dict(block or {}).items()}
    label = section or cls.__name__
    unknown = sorted(config_key(k) for k in set(given) - names)
    if unknown:
        expected = sorted(config_key(n) for n in names)
        raise ValueError(f"config block `{label}`: unknown key(s) {unknown}; expected some of {expected}")
    # deep copies: a default list or dict must not be shared between settings objects
    values = {field_name(k): copy.deepcopy(v) for k, v in block_defaults(section).items()} if section else {}
    values = {k: v for k, v in values.items() if k in names}
    values.update(given)
    missing = sorted(config_key(n) for n in names - set(values))
    if missing:
        raise ValueError(f"config block `{label}`: missing key(s) {missing} (no default in the schema)")
    return cls(**values)


def settings_to_block(settings: Any) -> dict[str, Any]:
    """The config block of a settings dataclass (fields back to config keys), for logs and checkpoints."""
    return {config_key(k): v for k, v in dataclasses.asdict(settings).items()}
