"""Trie-constrained beam search of the tuned LLM over the test split (docs/method.md sections 1 and 5).

Modules:
    search       constrained_beam_search: batched prompts, one prompt cache repeated to its beams
    beams        BatchBeams: beams, finished pool and stopping rule of one batch (the model stays outside)
    d3           D3's text-free assistant: SASRec's mass per title and per trie edge
    predictions  the prediction table (docs/formats.md) of the ranked titles
    run          DecodeSettings, DecodeJob, run_decode, launch; `python -m flowrec.decode.run job.json`
                 is the torchrun target
"""
