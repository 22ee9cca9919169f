"""Rule distfit_table: title- and token-level KL(T||R), KL(R||T) and JS of every method (RQ1 table)."""

from flowrec import distfit
from flowrec.logs import log_to
from flowrec.report import to_markdown, write_table
from flowrec.trie import Trie


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    target = distfit.read_target(snakemake.input.target)
    samples = {distfit.TUNING_SET: distfit.read_samples(snakemake.input.tuning_set)}
    probs = {}
    methods = snakemake.params.methods
    for method, path, prob in zip(methods, snakemake.input.samples, snakemake.input.probs, strict=True):
        samples[method] = distfit.read_samples(path)
        probs[method] = distfit.read_title_probs(prob)
    table = distfit.divergence_table(target, samples, Trie.load(snakemake.input.trie), probs)
    title = f"Distribution fitting on {snakemake.wildcards.dataset}: {len(target)} target titles"
    write_table(table, snakemake.output.csv, snakemake.output.md, title)
    log.info("\n%s", to_markdown(table, title))


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821
