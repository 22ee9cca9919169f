# Input and params functions of distribution fitting (rules/distfit.smk): the config keys each step reads, so that a
# change reruns that step and what depends on it, nothing else.

# The distfit keys each rule uses (a change reruns that rule and what follows, nothing else).
_DISTFIT_TARGET_KEYS = ("target", "target_size", "target_seed", "train_samples", "seed")
_DISTFIT_TUNE_KEYS = ("train_samples", "epochs", "batch_size", "micro_batch_size", "learning_rate", "seed")
_DISTFIT_TUNE_METHOD_KEYS = {
    "flower": ("lambda", "sample_temperature"),
    "flower_vocab": ("lambda", "sample_temperature"),
    "flower_published": (
        "published_learning_rate",
        "published_subtb_decay",
        "published_replay_threshold",
        "published_off_trie_log_reward",
    ),
    "dpo": ("dpo_beta",),
    "grpo": ("rl_generations",),
}
_DISTFIT_GENERATE_KEYS = ("generate", "train_samples", "generate_batch_size", "seed")


def get_distfit_settings(keys):
    return {key: config["distfit"][key] for key in keys}


def get_distfit_target_inputs(wildcards):
    """The target file when one is configured (editing it reruns the workflow from here; no dataset
    stage runs), else the dataset's train-history frequencies that the target is sampled from."""
    target = config["distfit"]["target"]
    return {"target_file": target} if target else {"groups": f"results/{wildcards.dataset}/trie/groups.parquet"}


def get_distfit_tune_settings(wildcards):
    """Shared tuning keys plus the method's own (Flower: lambda and sample temperature; the published
    recipe: its learning rate, decay, replay threshold and off-trie reward; DPO: beta; GRPO: group size)."""
    return get_distfit_settings(_DISTFIT_TUNE_KEYS + _DISTFIT_TUNE_METHOD_KEYS.get(wildcards.method, ()))


def get_distfit_generate_inputs(wildcards):
    """The tuned model, except for the untuned base row."""
    if wildcards.method == "base":
        return {}
    return {"model": f"results/{wildcards.dataset}/distfit/{wildcards.method}/model"}

