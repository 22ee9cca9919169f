# Shared by all the .smk files (functions live here only, rules in the others): config validation,
# method lists, wildcard constraints, and the input/params helpers (get_*).
import importlib.util
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# Rules run stage entries with `script:`; put src/ on the path so that they import the package
# in any environment (the project venv, or a conda env built from envs/*.yaml).
_SRC = str(Path(workflow.basedir) / "src")
# Only modules of the standard library's weight are imported here (code_deps: ast; config_checks and
# model_source: no transformers at import; resources: json): Snakemake's own process has no LLM stack
# under conda.
sys.path.insert(0, _SRC)

from flowrec import methods
from flowrec import resources as res
from flowrec.code_deps import module_files
from flowrec.config_checks import check_config, explain_schema_error, normalise_user_paths
from flowrec.model_source import converted_name

try:
    validate(config, "../config/schema.yaml")
except Exception as err:  # a number YAML read as a string: say so (config_checks.explain_schema_error)
    raise explain_schema_error(err, config) from err

# User paths (raw_dir, import_dir, distfit.target) in one form before the rules read them (`~` expanded,
# no trailing or doubled slash; config_checks.user_path).
normalise_user_paths(config)
# Everything the schema cannot express (NaN/inf, cross-field rules, the model source, limits against
# the prepared catalogue) fails here, before Snakemake deletes any output of a job that would fail.
check_config(config)


def code_of(module):
    """The source files of a stage module and of every flowrec module it imports (flowrec.code_deps):
    a rule's `code` input, so that editing any of them reruns the rule, and nothing else does."""
    base = Path(workflow.basedir)
    return [str(p.relative_to(base)) for p in module_files(module, base / "src")]


# This sets PYTHONPATH rather than reading a user-supplied one, so it is no case for `envvars:`; every
# job re-parses this file (also on a cluster node), so the setting reaches every job.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p))

if os.path.exists("results") and not os.path.isdir("results"):
    raise ValueError(f"results is not a folder ({os.path.abspath('results')}): move it away; outputs go there")

DATASETS = list(config["active_datasets"])
_AFL = config.get("afl", {})
# With a target file (distfit.target) RQ1 needs no dataset: a distfit.datasets entry is then only the
# name of its results folder.
_DISTFIT_NEED_DATA = [] if config["distfit"]["target"] else list(config["distfit"]["datasets"])
_unknown = [
    d
    for d in DATASETS + _DISTFIT_NEED_DATA + list(_AFL.get("datasets", [])) + list(config["align"]["datasets"])
    if d not in config["datasets"]
]
if _unknown:
    raise ValueError(
        f"config: active_datasets/distfit.datasets/afl.datasets/align.datasets name {_unknown}, not keys of `datasets` "
        "(distfit.datasets may name any folder when distfit.target is set)"
    )
# Every method of every table comes from the registry (flowrec.methods): these lists are views of it.
TUNED_METHODS = methods.trained()  # trained by the tune rule (tuned from the base model, and aligned for RQ3)
DECODED_METHODS = methods.decoded()  # decoded by the decode rule (row -> the trained model it decodes)
REFERENCE_METHODS = methods.names(kind="reference")
TABLE_METHODS = methods.names(table="main")  # Table 4, in the paper's row order
EVALUATED_METHODS = [*TABLE_METHODS, *methods.names(kind="aligned")]  # scored by evaluate_method (Tables 4 and 5)
DISTFIT_ROWS = list(methods.DISTFIT)
DISTFIT_TUNED = [m for m in DISTFIT_ROWS if methods.DISTFIT[m].loss]
# RQ3 (Table 5): the aligned rows the config asks for (align.methods x align.starts).
ALIGN_METHODS = methods.aligned(config["align"]["methods"], config["align"]["starts"])
ALIGN_DATASETS = list(config["align"]["datasets"])


wildcard_constraints:
    dataset="|".join(
        sorted(
            set(DATASETS)
            | set(config["distfit"]["datasets"])
            | set(_AFL.get("datasets", []))
            | set(ALIGN_DATASETS)
        )
    ),
    method="|".join(sorted(set(methods.REGISTRY) | set(DISTFIT_ROWS))),
    recmodel="sasrec|gru4rec|caser",
    variant="base|agent|afl|afl_norec|afl_noreward|afl_none|reward_model|user_agent",


# Keys of a dataset's entry that are no data setting: a method's settings for that dataset only (the
# same as flowrec.data.settings.DATASET_METHOD_KEYS, whose package this process does not import).
_DATASET_METHOD_KEYS = ("flower",)


def get_dataset_settings(wildcards):
    """The dataset's data settings (without its per-dataset method settings, which rerun no data stage)."""
    settings = config["datasets"][wildcards.dataset]
    return {key: value for key, value in settings.items() if key not in _DATASET_METHOD_KEYS}


def get_final_outputs():
    outputs = [
        "results/tables/all.csv",
        "results/tables/all.md",
    ]
    for dataset in DATASETS:
        outputs += [
            f"results/{dataset}/tables/results.csv",
            f"results/{dataset}/figures/paired_differences.png",
            f"results/{dataset}/figures/popularity_groups.png",
            f"results/{dataset}/figures/flower_training.png",
        ]
    for dataset in ALIGN_DATASETS:
        outputs += [f"results/{dataset}/tables/rq3.csv", f"results/{dataset}/tables/rq3.md"]
    for dataset in config["distfit"]["datasets"]:
        outputs += [f"results/{dataset}/distfit/table.csv", f"results/{dataset}/distfit/figure.png"]
    for dataset in _AFL.get("datasets", []):
        outputs += [f"results/{dataset}/afl/table.csv", f"results/{dataset}/afl/table.md"]
    return outputs


# --- the base model ---
# GGUF sources (the embedded SmolLM2, a .gguf file) and tiny-random are converted once by rule
# prepare_model into results/models/<name>/, which every LLM rule reads (an input, so a rerun of the
# conversion reruns them); hub ids and save_pretrained directories are read where they are.
_CONVERTED = converted_name(config["model"]["name_or_path"])
BASE_MODEL = f"results/models/{_CONVERTED}" if _CONVERTED else config["model"]["name_or_path"]
# The `model:` block as the stages receive it: name_or_path is what they load (BASE_MODEL).
MODEL_SETTINGS = {**config["model"], "name_or_path": BASE_MODEL}


def get_base_model_input(wildcards):
    """The converted base model, when there is one (see BASE_MODEL)."""
    return {"base_model": BASE_MODEL} if _CONVERTED else {}


def get_prepare_model_inputs(wildcards):
    """A .gguf file given by path is an input (a new file reconverts); the embedded one lives in a package."""
    name = config["model"]["name_or_path"]
    return {"gguf": os.path.expanduser(name)} if name.endswith(".gguf") else {}


# --- resources (flowrec.resources: memory from the model's size and the batch) ---
# GPUs per tuning, decoding and fitting job (config gpus_per_job: > 1 runs torchrun, one process per
# GPU, each holding a copy of the model in host memory too).
GPUS = config["gpus_per_job"]
MODEL_SHAPE, MODEL_SHAPE_SOURCE = res.model_shape(config["model"]["name_or_path"])


def get_tune_mem_mb(wildcards):
    """A tuning job's host memory: the model's training state and a micro batch's activations, times
    the method's activation factor (registry); an aligned job also holds its frozen reference."""
    method = methods.get(wildcards.method)
    tune = get_tune_block(wildcards)
    return res.train_mb(
        MODEL_SHAPE,
        tune["micro_batch_size"],
        res.prompt_tokens(config["prompt"]["max_history"]),
        lora=config["model"]["lora"],
        activation_factor=method.activation_factor,
        reference_model=method.reference is not None,
        processes=GPUS,
    )


def get_decode_mem_mb(wildcards):
    decode = config["decode"]
    seq = res.prompt_tokens(config["prompt"]["max_history"])
    return res.inference_mb(
        MODEL_SHAPE, decode["batch_size"], decode["batch_size"] * decode["num_beams"], seq, processes=GPUS
    )


def get_distfit_tune_mem_mb(wildcards):
    """History-free prompts; a Flower row forwards [targets ; samples] as 2B rows, DPO scores a chosen
    and a rejected title against a reference model, GRPO scores rl_generations completions per prompt
    (each row's activation factor is in the registry, flowrec.methods.DISTFIT)."""
    distfit = config["distfit"]
    micro = distfit["micro_batch_size"] or distfit["batch_size"]
    return res.train_mb(
        MODEL_SHAPE,
        micro,
        res.HISTORY_FREE_PROMPT_TOKENS + res.TITLE_LINE_TOKENS,
        lora=config["model"]["lora"],
        activation_factor=methods.DISTFIT[wildcards.method].activation_factor,
        reference_model=wildcards.method == "dpo",
    )


def get_distfit_generate_mem_mb(wildcards):
    batch = config["distfit"]["generate_batch_size"]
    return res.inference_mb(MODEL_SHAPE, 1, batch, res.HISTORY_FREE_PROMPT_TOKENS + res.TITLE_LINE_TOKENS)


# --- data stage ---

def get_download_settings(wildcards):
    """Only the settings the download uses: changing k_core must not download again."""
    settings = config["datasets"][wildcards.dataset]
    return {
        "category": settings["category"],
        "base_url": settings["base_url"],  # validate() filled in the schema's defaults
        "checksums": settings["checksums"],
    }


def get_prepare_data_inputs(wildcards):
    """The source files of a dataset, named by role (see flowrec.data.prepare)."""
    settings = config["datasets"][wildcards.dataset]
    if settings["source"] == "movielens":
        # ml-100k inside the installed recbole (flowrec.data.movielens.movielens_folder does the same)
        spec = importlib.util.find_spec("recbole")
        folder = os.path.join(next(iter(spec.submodule_search_locations)), "dataset_example", "ml-100k")
        return {"inter": f"{folder}/ml-100k.inter", "item": f"{folder}/ml-100k.item"}
    if settings["source"] == "amazon":
        category = settings["category"]
        folder = settings.get("raw_dir") or f"results/{wildcards.dataset}/raw"
        return {"reviews": f"{folder}/{category}.json.gz", "meta": f"{folder}/meta_{category}.json.gz"}
    folder = settings["import_dir"]
    files = {f"{name}_csv": f"{folder}/{name}.csv" for name in ("train", "valid", "test")}
    if os.path.exists(f"{folder}/items.tsv"):
        files["items_tsv"] = f"{folder}/items.tsv"
    return files


# --- tuning ---


def get_tune_inputs(wildcards):
    """A method's own inputs (registry `needs`, `start`, `reference`): IFairLRS the popularity groups,
    Flower and PPO SASRec's p_ui (rewards), an aligned method its starting and reference models."""
    method = methods.get(wildcards.method)
    folder = f"results/{wildcards.dataset}"
    inputs = {}
    if "groups" in method.needs:
        inputs.update(groups=f"{folder}/trie/groups.parquet", groups_json=f"{folder}/trie/groups.json")
    if "p_ui_train" in method.needs:
        inputs["p_ui_train"] = f"{folder}/sasrec/p_ui_train.npy"
    if method.start is not None:
        inputs["start_model"] = f"{folder}/tune/{method.start}/model"
    if method.reference is not None:
        inputs["reference_model"] = f"{folder}/tune/{method.reference}/model"
    return inputs


def get_tune_block(wildcards):
    """The `tune:` block; an aligned method's with align.tune's keys over it (its optimiser, batch and
    budget) and PPO's with align.ppo.tune's over those, so that an align setting reruns only RQ3."""
    method = methods.get(wildcards.method)
    if method.kind != "aligned":
        return config["tune"]
    block = {**config["tune"], **config["align"]["tune"]}
    if method.family == "ppo":
        block.update(config["align"]["ppo"]["tune"])
    return block


def get_flower_settings(wildcards):
    """The `flower:` block, with the dataset's own `flower:` keys over it (the published theta per
    dataset) and the method's registry overrides (flower_vocab's normalise), for the Flower methods
    only, so that a Flower setting reruns no other method (and the F_ rows of RQ3 that start from it)."""
    method = methods.get(wildcards.method)
    if "flower" not in method.settings:
        return None
    per_dataset = config["datasets"][wildcards.dataset].get("flower") or {}
    return {**config["flower"], **per_dataset, **method.overrides}


# The align keys every aligned method reads, and each algorithm's own (the loss classes' fields).
_ALIGN_SHARED_KEYS = ("seed",)
_ALIGN_FAMILY_KEYS = {
    "sdpo": ("beta", "negatives"),
    "dmpo": ("beta", "negatives", "dmpo_reduce"),
    "rosepo": ("beta",),
    "ppo": ("ppo",),
}


def get_align_settings(wildcards):
    """An aligned method's settings from the `align:` block (its own keys only, so that a DMPO setting
    reruns no S-DPO job); None for every other method."""
    method = methods.get(wildcards.method)
    if "align" not in method.settings:
        return None
    block = config["align"]
    keys = _ALIGN_SHARED_KEYS + _ALIGN_FAMILY_KEYS[method.family]
    return {"family": method.family, **{key: block[key] for key in keys}, **method.overrides}


def get_tune_granularity(wildcards):
    """Flower's state granularity (trie.granularity); the methods without SubTB have no states."""
    return config["trie"]["granularity"] if "flower" in methods.get(wildcards.method).settings else 1


def get_tune_runtime(wildcards):
    """Minutes of a tuning job at the paper's scale (a day of GPU time for SFT), times the method's
    runtime factor (Flower samples and scores a title per prompt on top of SFT)."""
    return round(1440 * methods.get(wildcards.method).runtime_factor)


# --- decoding ---
# Keys of the decode block every method uses; temp_temperature and d3_weight reach only their own row.
_DECODE_SHARED_KEYS = ("test_samples", "seed", "num_beams", "num_return", "batch_size")
_D3_METHODS = ("d3", "d3_noassist")  # registry decodings that use the SASRec assistant scores

def get_tuned_model(wildcards):
    """The trained model a decoded row decodes with (the registry's `decodes`)."""
    return f"results/{wildcards.dataset}/tune/{DECODED_METHODS[wildcards.method]}/model"


def get_decode_inputs(wildcards):
    """SASRec's test scores for D3's assistant (d3_noassist keeps the assistant at weight g = 1)."""
    if methods.get(wildcards.method).decoding in _D3_METHODS:
        return {"p_ui": f"results/{wildcards.dataset}/sasrec/p_ui_test.npy"}
    return {}


def get_decode_settings(wildcards):
    """flowrec.decode.run.DecodeSettings of one method, so that changing temp_temperature reruns only temp.

    temp: decode.temp_temperature. d3: no length normalisation (D3's length_penalty 0) and SASRec's
    assistant at weight g = decode.d3_weight. d3_noassist: the same with g = 1 (assistant off, the value
    the published D3 scripts leave it at). Every other method: temperature 1, length-normalised scores.
    """
    block = config["decode"]
    settings = {key: block[key] for key in _DECODE_SHARED_KEYS}
    settings.update(temperature=1.0, length_normalise=True, assistant_weight=None)
    decoding = methods.get(wildcards.method).decoding
    if decoding == "temp":
        settings["temperature"] = block["temp_temperature"]
    elif decoding in _D3_METHODS:
        settings["length_normalise"] = False
        settings["assistant_weight"] = block["d3_weight"] if decoding == "d3" else 1.0
    return settings
