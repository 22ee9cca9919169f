"""Distribution fitting without history (the paper's RQ1, docs/method.md sections 4 and 6).

A target set T = {title: count} becomes a trie over its titles (counts as item rewards); one base model
is tuned on the history-free prompt by each method on the same budget, then samples titles under the
trie, and a table compares the generated distribution R with T.

Modules:
- methods: the rows of the experiment (tuned methods, labels) — torch-free;
- files: target.json, samples and exact-probability parquet files, read and written — torch-free, so
  that the figure stage runs in envs/report.yaml;
- target: DistfitSettings and the target set (target file, top titles, tuning draws, target trie);
- train: SFT and the Flower rows through the pipeline's own training loop (flowrec.tune);
- published: the published RQ1 recipe's loss (flower_published); explore: its unconstrained sampler;
- trl: DPO and GRPO through trl;
- trl_log: trl's metrics into log.csv rows and the rule log (a TrainerCallback);
- evaluate: title generation under the trie and the divergence table.
The figure (target vs generated shares) is flowrec.report.plot_distribution_fit.
"""
