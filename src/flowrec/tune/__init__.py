"""Fine-tuning of the LLM recommender: BIGRec, IFairLRS and Flower (one loop, docs/method.md sections 4-5).

losses.py        pure loss functions (SFT, IFairLRS weights, reward variants, SubTB with granularity)
data.py          pre-tokenised tensors of a split (prompts, targets, weights, p_ui per title), built once
forward.py       per-batch forward passes: SFT, and Flower with the prompt encoded once and shared
objectives.py    a method's loss as one object (SFTLoss, FlowerLoss), looked up by method (make_loss)
settings.py      the `tune:` config block (TuneSettings)
accel.py         Accelerate: device, bf16 autocast over fp32 master weights, clipping, cross-rank sums
step.py          one optimizer step: micro batches, gradient all-reduce, clipping, AdamW, schedule
loop.py          epochs, validation, early stopping, checkpoints every N steps, mid-epoch resume
checkpoint.py    last.pt / best.pt: fingerprint, RNG states, data position, save, resume
training_log.py  log.csv rows, loss.png, progress lines in the rule log
run.py           one job end to end; `python -m flowrec.tune.run job.json` is the torchrun target
"""
