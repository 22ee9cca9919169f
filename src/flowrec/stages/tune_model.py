"""Stage tune: fine-tune the LLM recommender with one method (docs/method.md sections 4-5 and 10).

BIGRec (SFT), IFairLRS (SFT with popularity-group weights: give --groups and --groups-json), Flower
(SFT + lambda * SubTB; give --flower, --granularity and, for the div and add rewards, --p-ui-train)
and the aligned methods of RQ3 (S-DPO, DMPO, RosePO, PPO from a tuned model: give --start-model,
--reference-model and --align; PPO also --p-ui-train) share one training loop (flowrec.tune.loop);
the method's registry entry (flowrec.methods) picks the loss (flowrec.tune.objectives).
Checkpoints go to --checkpoints, outside the outputs, so that a killed job resumes after its last epoch.
With more than one process (`nproc`) the job runs under torchrun, one process per device.
"""

import logging
from pathlib import Path

import torch

from flowrec.cli import File, Param, Stage
from flowrec.tune.run import TuneJob, launch

log = logging.getLogger(__name__)


def tune(
    item_table: str,
    train: str,
    valid: str,
    trie: str,
    model_dir: str,
    log_csv: str,
    loss_png: str,
    model: dict,
    prompt: dict,
    tune: dict,
    granularity: int,
    dataset: str,
    method: str,
    groups: str | None = None,
    groups_json: str | None = None,
    p_ui_train: str | None = None,
    flower: dict | None = None,
    align: dict | None = None,
    start_model: str | None = None,
    reference_model: str | None = None,
    checkpoints: str | None = None,
    nproc: int = 1,
    threads: int = 1,
) -> None:
    """Train `method` on `dataset` and save the tuned model to `model_dir`, with log.csv and loss.png.

    `checkpoints` defaults to the folder `checkpoints` beside `model_dir`.
    """
    torch.set_num_threads(threads)
    job = TuneJob(
        method=method,
        items=item_table,
        train=train,
        valid=valid,
        trie=trie,
        model_dir=model_dir,
        log_csv=log_csv,
        loss_png=loss_png,
        checkpoints=str(checkpoints or Path(model_dir).parent / "checkpoints"),
        model=dict(model or {}),
        prompt=dict(prompt or {}),
        tune=dict(tune or {}),
        flower=dict(flower) if flower is not None else None,
        granularity=int(granularity),
        groups=groups,
        groups_json=groups_json,
        p_ui_train=p_ui_train,
        start_model=start_model,
        reference_model=reference_model,
        align=dict(align) if align is not None else None,
    )
    log.info("tune %s on %s: %d process(es)", method, dataset, max(nproc, 1))
    launch(job, max(nproc, 1))


STAGE = Stage(
    run=tune,
    doc=__doc__,
    inputs={
        "item_table": "data/items.parquet",
        "train": "data/train.parquet",
        "valid": "data/valid.parquet",
        "trie": "trie/trie.npz",
        "groups": File("trie/groups.parquet (IFairLRS)", optional=True),
        "groups_json": File("trie/groups.json (IFairLRS)", optional=True),
        "p_ui_train": File(
            "sasrec/p_ui_train.npy (Flower's div and add rewards, PPO's reward)", optional=True
        ),
        "start_model": File(
            "tune/{start}/model (aligned methods: the tuned model they start from)", optional=True
        ),
        "reference_model": File("tune/{start}/model (aligned methods: the frozen reference)", optional=True),
    },
    outputs={
        "model_dir": "tune/{method}/model (folder of the tuned model)",
        "log_csv": "tune/{method}/log.csv (per-step losses)",
        "loss_png": "tune/{method}/loss.png (training curves)",
    },
    params={
        "model": Param("base LLM settings", block="model"),
        "prompt": Param("prompt settings", block="prompt"),
        "tune": Param("training loop settings", block="tune"),
        "flower": Param("Flower's settings (Flower only)", block="flower"),
        "align": Param("an aligned method's settings (rules/common.smk get_align_settings; RQ3 only)"),
        "granularity": Param("Flower's SubTB state spacing in tokens", block="trie.granularity", default=1),
        "checkpoints": Param("folder of last.pt and best.pt (resume); default: beside model_dir"),
    },
    wildcards={
        "dataset": "dataset name",
        "method": "a trained method of flowrec.methods (bigrec, flower, b_sdpo, ...)",
    },
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))
