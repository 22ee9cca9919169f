"""Stage download_amazon: the reviews and metadata files of one Amazon 2018 category (resumable, verified).

Only the dataset settings the download uses reach it (category, base_url, checksums), so that changing
e.g. k_core downloads nothing again; keys left out take the defaults of config/schema.yaml.
"""

import logging
from pathlib import Path

from flowrec.cli import Param, Stage
from flowrec.data.amazon import amazon_urls, download_file
from flowrec.settings import block_defaults

log = logging.getLogger(__name__)

DOWNLOAD_KEYS = ("category", "base_url", "checksums")


def download_amazon(reviews: str, meta: str, settings: dict, dataset: str) -> None:
    """Download the category's reviews to `reviews` and its metadata to `meta` (sha256-checked if given)."""
    defaults = block_defaults("datasets.*")
    values = {key: settings.get(key, defaults.get(key)) for key in DOWNLOAD_KEYS}
    if not values["category"]:
        raise ValueError(f"datasets.{dataset}.category: required to download (e.g. CDs_and_Vinyl)")
    urls = amazon_urls(values["base_url"], values["category"])
    checksums = values["checksums"] or {}
    for key, dest in (("reviews", reviews), ("meta", meta)):
        log.info("downloading %s -> %s", urls[key], dest)
        download_file(urls[key], dest, sha256=checksums.get(Path(dest).name), block=f"datasets.{dataset}")


STAGE = Stage(
    run=download_amazon,
    doc=__doc__,
    outputs={"reviews": "raw/{category}.json.gz", "meta": "raw/meta_{category}.json.gz"},
    params={
        "settings": Param("the dataset's category, base_url and checksums", block="datasets.{dataset}"),
    },
    wildcards={"dataset": "dataset name (a key of `datasets`)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))
