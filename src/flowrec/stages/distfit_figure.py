"""Stage distfit_figure: target vs generated share over titles sorted by target share (the paper's
Figure 4, RQ1). Torch-free: runs in envs/report.yaml."""

from flowrec.cli import File, Param, Stage
from flowrec.distfit.files import read_samples, read_target
from flowrec.distfit.methods import METHODS
from flowrec.report import frequency_matrix, plot_distribution_fit


def draw_figure(target: str, samples: list[str], figure: str, methods: list[str], dataset: str) -> None:
    """Plot the share of every target title in T and in each method's samples (`samples` in `methods` order)."""
    counts = read_target(target)
    sampled = {m: read_samples(p) for m, p in zip(methods, samples, strict=True)}
    title = f"Distribution fitting on {dataset}: {len(counts)} titles, history-free prompt"
    plot_distribution_fit(frequency_matrix(counts, sampled), figure, title)


STAGE = Stage(
    run=draw_figure,
    doc=__doc__,
    inputs={
        "target": "distfit/target.json",
        "samples": File(
            "distfit/samples/{method}.parquet of every method, in `methods` order", multiple=True
        ),
    },
    outputs={"figure": "distfit/figure.png"},
    params={"methods": Param("the methods of `samples`, in order", default=list(METHODS))},
    wildcards={"dataset": "dataset name (in the figure's title)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))
