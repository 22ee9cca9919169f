"""Rule train_sasrec: SASRec in RecBole -> model, p_ui per split, metrics, baseline top-10 (method.md 4-5)."""

from flowrec.logs import log_to
from flowrec.sasrec import SasrecSettings
from flowrec.sasrec_recbole import train_and_export


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    settings = SasrecSettings.from_dict(snakemake.params.sasrec)
    log.info("train_sasrec %s: %s, %d threads", snakemake.wildcards.dataset, settings, snakemake.threads)
    train_and_export(
        items_path=snakemake.input.item_table,
        split_paths={name: snakemake.input[name] for name in ("train", "valid", "test")},
        settings=settings,
        threads=snakemake.threads,
        model_path=snakemake.output.model,
        metrics_path=snakemake.output.metrics,
        p_ui_paths={name: snakemake.output[f"p_ui_{name}"] for name in ("train", "valid", "test")},
        predictions_path=snakemake.output.predictions,
    )


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821
