"""One dataset's settings: an entry of `datasets:` in the config (config/schema.yaml documents every key).

`dataset_settings(block, name)` builds them with flowrec.settings.settings_from_block (schema defaults
fill the keys the block leaves out; unknown keys raise) and checks what the schema cannot express per
source: an Amazon dataset names its category, an imported one its folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flowrec.settings import settings_from_block

SOURCES = ("movielens", "amazon", "import")
# Protocol variants: ours first (the schema's default), then the published preprocessing script's.
REPEATS = ("drop", "keep")
TITLE_CLEANINGS = ("flowrec", "published")
ORDERINGS = ("flowrec", "published")


@dataclass
class DatasetSettings:
    """One entry of `datasets:`; build it with `dataset_settings`."""

    source: str
    category: str | None
    raw_dir: str | None
    base_url: str
    checksums: dict[str, str]
    import_dir: str | None
    window_start: str | None
    window_end: str | None
    widen_window_min_items: int | None
    k_core: int
    max_history: int
    split: list[float]
    seed: int
    max_title_words: int
    repeats: str  # drop | keep: repeated (user, item) pairs
    title_cleaning: str  # flowrec | published
    ordering: str  # flowrec | published: item-id shuffle, ties of equal target time, split cut points

    def validate(self, name: str = "dataset") -> None:
        if self.source not in SOURCES:
            raise ValueError(f"datasets.{name}.source: {self.source!r}, expected movielens, amazon or import")
        if self.source == "amazon" and not self.category:
            raise ValueError(f"datasets.{name}.category: required for source amazon (e.g. CDs_and_Vinyl)")
        if self.source == "import" and not self.import_dir:
            raise ValueError(f"datasets.{name}.import_dir: required for source import")
        if len(self.split) != 3 or min(self.split) <= 0:
            raise ValueError(f"datasets.{name}.split: {self.split}, expected three positive shares")
        for key, allowed in (
            ("repeats", REPEATS),
            ("title_cleaning", TITLE_CLEANINGS),
            ("ordering", ORDERINGS),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"datasets.{name}.{key}: {getattr(self, key)!r}, expected one of {allowed}")
        if self.title_cleaning == "published" and self.source != "amazon":
            raise ValueError(
                f"datasets.{name}.title_cleaning: published is the published script's rule for Amazon "
                f"metadata; source {self.source!r} cleans its titles as flowrec"
            )
        for key in ("window_start", "window_end"):
            if getattr(self, key) is not None:
                month_start(getattr(self, key), f"datasets.{name}.{key}")


# Keys of a dataset's entry that are a method's settings for that dataset (rules/common.smk passes them
# to that method's jobs only), not data settings.
DATASET_METHOD_KEYS = ("flower",)


def dataset_settings(block: Mapping[str, Any], name: str = "dataset") -> DatasetSettings:
    """DatasetSettings of the config entry `datasets.{name}` (its per-dataset method keys left out),
    validated (errors name that entry)."""
    block = {key: value for key, value in block.items() if key not in DATASET_METHOD_KEYS}
    settings = settings_from_block(DatasetSettings, block, "datasets.*")
    settings.validate(name)
    return settings


def month_start(month: str, what: str = "month") -> int:
    """Unix seconds (UTC) of the first instant of `month` ("YYYY-MM")."""
    try:
        year, mon = (int(part) for part in month.split("-"))
        return int(datetime(year, mon, 1, tzinfo=UTC).timestamp())
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what}: {month!r}, expected YYYY-MM") from err
