"""Rule prepare_data: one dataset's source files -> items, train/valid/test, stats.json, d3/*.csv."""

from flowrec.data import DatasetSettings, prepare, write_prepared
from flowrec.logs import log_to

OUTPUT_KEYS = ("train", "valid", "test", "stats", "d3_train", "d3_valid", "d3_test")


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    settings = DatasetSettings.from_dict(dict(snakemake.params.settings), snakemake.wildcards.dataset)
    inputs = {key: str(value) for key, value in snakemake.input.items() if key != "code"}
    log.info("dataset %s (%s): inputs %s", snakemake.wildcards.dataset, settings.source, inputs)
    data = prepare(settings, inputs)
    out = {key: snakemake.output[key] for key in OUTPUT_KEYS}
    write_prepared(data, {**out, "items": snakemake.output["item_table"]})  # "items" is reserved in rules
    log.info("stats: %s", data.stats)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821
