"""Rule distfit_figure: target vs generated share over titles sorted by target share (paper's Figure 4)."""

from flowrec import distfit
from flowrec.logs import log_to


def main(snakemake) -> None:
    log_to(snakemake.log[0])
    target = distfit.read_target(snakemake.input.target)
    samples = {
        m: distfit.read_samples(p)
        for m, p in zip(snakemake.params.methods, snakemake.input.samples, strict=True)
    }
    title = (
        f"Distribution fitting on {snakemake.wildcards.dataset}: {len(target)} titles, history-free prompt"
    )
    distfit.plot_fit(distfit.frequency_matrix(target, samples), snakemake.output[0], title)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821
