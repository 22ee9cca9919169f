"""Fine-tuning of the LLM recommender: BIGRec, IFairLRS and Flower (one loop, method.md sections 4-5).

losses.py   pure loss functions (SFT, IFairLRS weights, reward variants, SubTB with granularity)
data.py     pre-tokenised tensors of a split (prompts, targets, weights, p_ui per title), built once
forward.py  per-batch losses: SFT, and Flower with the prompt encoded once and shared
loop.py     epochs, accumulation, early stopping, checkpoints/resume, CSV log, loss plot, data parallel
run.py      one job end to end; `python -m flowrec.tune.run job.json` is the torchrun target
"""
