"""SASRec on the paper's own CDs_and_Vinyl split, beside the paper's figures (docs/method.md section 7).

Imports ../shared/data/amazon2018-cds (the D3 CSV split) with flowrec.data.interop, runs the whole
SASRec stage (training, p_ui of every split, metrics, top-10) with the published script's settings of
config/paper.yaml (BCE, one block and head, dropout 0.1, lr 1e-3, batch 1024, weight decay 1e-5), and prints test HR@5 / NDCG@5 beside
the paper's SASRec row (HR@5 0.0851, NDCG@5 0.0641) plus the wall time.

    nice .venv/bin/python bench/sasrec_cds.py [--threads 2] [--loss BCE] [--epochs 200] [--out DIR]
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from flowrec.data.interop import import_d3
from flowrec.io import write_parquet
from flowrec.logs import log_to
from flowrec.sasrec import SasrecSettings
from flowrec.sasrec_recbole import train_and_export
from flowrec.settings import settings_from_block

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "amazon2018-cds"
PAPER = {"HR@5": 0.0851, "NDCG@5": 0.0641}


def paper_settings(**overrides) -> SasrecSettings:
    """config.yaml's sasrec block with config/paper.yaml's changes on top, then the overrides."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())["sasrec"]
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text()).get("sasrec", {})
    given = {key: value for key, value in overrides.items() if value is not None}
    return settings_from_block(SasrecSettings, {**base, **paper, **given}, "sasrec")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/valid/test.csv, items.tsv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loss", choices=["CE", "BCE"], default=None, help="default: config/paper.yaml")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs here (default: a temp dir)")
    args = parser.parse_args()
    if not (args.data / "train.csv").exists():
        print(f"{args.data}: no train.csv; nothing to benchmark", file=sys.stderr)
        return 1

    settings = paper_settings(
        loss=args.loss, epochs=args.epochs, patience=args.patience, learning_rate=args.learning_rate
    )
    with tempfile.TemporaryDirectory(prefix="sasrec-cds-") as tmp:
        out = args.out or Path(tmp)
        log = log_to(out / "sasrec_cds.log")
        logging.getLogger("flowrec.data").setLevel(logging.WARNING)
        start = time.perf_counter()
        items, splits, _stats = import_d3(args.data, max_history=10, seed=42)
        data = out / "data"
        write_parquet(items, data / "items.parquet")
        for name, table in splits.items():
            write_parquet(table, data / f"{name}.parquet")
        import_seconds = time.perf_counter() - start
        log.info("settings: %s", settings)
        metrics = train_and_export(
            items_path=data / "items.parquet",
            split_paths={name: data / f"{name}.parquet" for name in splits},
            settings=settings,
            threads=args.threads,
            model_path=out / "sasrec" / "model.pth",
            metrics_path=out / "sasrec" / "metrics.json",
            p_ui_paths={name: out / "sasrec" / f"p_ui_{name}.npy" for name in splits},
            predictions_path=out / "predictions" / "sasrec.parquet",
        )
        wall = time.perf_counter() - start

    n = {name: table.num_rows for name, table in splits.items()}
    print(f"\nSASRec on {args.data.name}: {items.num_rows} items, samples {n}")
    print(f"settings: {json.dumps(metrics['settings'])}")
    print(f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, {args.threads} threads")
    print(f"{'':24}{'HR@5':>8}{'NDCG@5':>8}{'HR@10':>8}{'NDCG@10':>8}")
    print(f"{'paper (SASRec, CDs)':24}{PAPER['HR@5']:>8.4f}{PAPER['NDCG@5']:>8.4f}{'':>8}{'':>8}")
    for key, label in (
        ("test", "test, item level"),
        ("test_titles", "test, title level"),
        ("valid", "valid, item level"),
    ):
        m = metrics[key]
        print(f"{label:24}{m['HR@5']:>8.4f}{m['NDCG@5']:>8.4f}{m['HR@10']:>8.4f}{m['NDCG@10']:>8.4f}")
    print(
        f"wall time: {wall:.0f} s (import {import_seconds:.0f} s, training {metrics['train_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
