"""Stage decode_method: trie-constrained beam search of one method over the seeded test subset
(docs/method.md sections 1 and 5).

BIGRec, Temp, D3, D3 without assistant, IFairLRS and Flower differ only in the tuned model they load
and the decode settings the rule resolves for them (temperature, length normalisation, D3's weight g).
More than one process (`nproc`; under Snakemake the rule's `nproc` or `gpu` resource) decodes with
one torchrun process per device (flowrec.decode.run).
"""

import logging

import torch

from flowrec.cli import File, Param, Stage
from flowrec.decode.run import DecodeJob, DecodeSettings, launch
from flowrec.prompts import PromptSettings
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def decode_method(
    model: str,
    trie: str,
    test: str,
    item_table: str,
    predictions: str,
    decode: dict,
    prompt: dict,
    dataset: str,
    method: str,
    p_ui: str | None = None,
    nproc: int = 1,
    threads: int = 1,
) -> None:
    """Decode the seeded test subset with the tuned `model` and write the `predictions` parquet."""
    torch.set_num_threads(threads)
    settings_from_block(DecodeSettings, decode)  # a missing or unknown key fails before the model loads
    prompt_settings = settings_from_block(PromptSettings, prompt, "prompt")
    job = DecodeJob(
        model_dir=model,
        trie=trie,
        items=item_table,
        test=test,
        output=predictions,
        decode=dict(decode),
        max_history=prompt_settings.max_history,
        prompt_style=prompt_settings.style,
        item_noun=prompt_settings.item_noun,
        p_ui=p_ui,
    )
    log.info("%s %s: decoding with %s, %d process(es)", dataset, method, job.decode, nproc)
    launch(job, nproc)


STAGE = Stage(
    run=decode_method,
    doc=__doc__,
    inputs={
        "model": "tuned model folder (flowrec.model.save_tuned)",
        "trie": "trie/trie.npz",
        "test": "data/test.parquet",
        "item_table": "data/items.parquet",
        "p_ui": File("sasrec/p_ui_test.npy: SASRec's test scores (D3's assistant only)", optional=True),
    },
    outputs={"predictions": "predictions/{method}.parquet (docs/formats.md)"},
    params={
        "decode": Param(
            "decode settings resolved for the method: test_samples, seed, num_beams, num_return, "
            "batch_size, temperature, length_normalise, assistant_weight (null: no assistant)"
        ),
        "prompt": Param("prompt block: max_history, style, item_noun", block="prompt"),
    },
    wildcards={"dataset": "dataset name", "method": "method name (labels the log)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))
