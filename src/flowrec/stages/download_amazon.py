"""Rule download_amazon: the reviews and metadata files of one Amazon 2018 category (resumable)."""

from flowrec.data.amazon import amazon_urls, download_file
from flowrec.logs import log_to


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    settings = dict(snakemake.params.settings)
    urls = amazon_urls(settings["base_url"], settings["category"])
    checksums = settings.get("checksums") or {}
    for key in ("reviews", "meta"):
        dest = snakemake.output[key]
        name = dest.rsplit("/", 1)[-1]
        log.info("downloading %s -> %s", urls[key], dest)
        download_file(urls[key], dest, sha256=checksums.get(name))


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821
