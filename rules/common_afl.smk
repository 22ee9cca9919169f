# Input and params functions of AFL (rules/afl.smk): the config keys each step reads, so that a
# change reruns that step and what depends on it, nothing else.

# The afl keys of each AFL step (a change reruns that step and what depends on it, nothing else).
_AFL_CANDIDATE_KEYS = ("users", "n_candidates", "ratios", "seed")
_AFL_RUN_KEYS = ("max_rounds",)
_AFL_SIMULATE_KEYS = ("max_rounds", "ratios", "valid_users", "seed")
_AFL_ABLATIONS = ("afl_norec", "afl_noreward", "afl_none")


def get_afl_settings(keys):
    return {key: config["afl"][key] for key in keys}


def get_afl_backend(wildcards):
    """The backend block for the rows that call the LLM; the base row and the reward-model row call
    none, so a backend setting does not rerun them."""
    return None if wildcards.variant in ("base", "reward_model") else config["afl"]["backend"]


def get_afl_domain(wildcards):
    """Prompt wording: movies for MovieLens, products for Amazon and imports (flowrec.afl.data)."""
    return "movie" if config["datasets"][wildcards.dataset]["source"] == "movielens" else "product"


def get_afl_rec_p_ui(wildcards):
    """p_ui of the test split from the recommendation model: SASRec's own rule, or afl_train_recmodel."""
    if wildcards.recmodel == "sasrec":
        return f"results/{wildcards.dataset}/sasrec/p_ui_test.npy"
    return f"results/{wildcards.dataset}/afl/recmodels/{wildcards.recmodel}/p_ui_test.npy"


def get_afl_recommend_outputs(wildcards):
    """Every recommendation model with the main rows; the ablations with the first model only."""
    block = config["afl"]
    first = block["rec_models"][0]
    files = []
    for model in block["rec_models"]:
        for variant in block["variants"]:
            if variant in _AFL_ABLATIONS and model != first:
                continue
            files.append(f"results/{wildcards.dataset}/afl/recommend/{model}/{variant}.json")
    return files


def get_afl_runtime(wildcards):
    """Minutes of an LLM-calling AFL job at the paper's scale (thousands of calls to an endpoint)."""
    return 5 if wildcards.variant in ("base", "reward_model") else 600
