"""Every method of every table, as data: the one method registry.

Rules (rules/common.smk), resources, the training job, the report and the tests read this module;
nothing else spells a method's name. Torch-free and standard-library only: Snakemake's own process
imports it when it parses the workflow, and the report stages run in envs/report.yaml.

Kinds of a recommendation method (the `{method}` wildcard under results/{dataset}/):
  reference  a row without a model of its own: Random, MostPop (rule predict_reference)
  sasrec     SASRec in RecBole (rule train_sasrec)
  tuned      an LLM tuned from the base model (rule tune), decoded as itself (rule decode)
  decoded    another decoding of a tuned model (rule decode): Temp, D3
  aligned    preference alignment started from a tuned model, against a frozen copy of it as the
             reference (rule tune from that model, RQ3), decoded as itself

RQ1 (distribution fitting, rules/distfit.smk) has rows of its own, in DISTFIT (kind `distfit`).

Adding a method: one entry below (an aligned pair with `_aligned`) and, when it trains with a new
objective, one loss class in flowrec.tune.objectives.LOSSES under its `loss` name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from flowrec.resources import FLOWER_FACTOR

KINDS = ("reference", "sasrec", "tuned", "decoded", "aligned", "distfit")
TABLES = ("main", "rq3", "distfit")  # Table 4, Table 5, RQ1's table (Table 3)
# What a training job may need beside the split (inputs of rule tune, fields of flowrec.tune.run.TuneJob).
NEEDS = ("groups", "p_ui_train", "preferences")
# Decoding variants of rule decode (flowrec.decode.run.DecodeSettings from the `decode:` block).
DECODINGS = ("beam", "temp", "d3", "d3_noassist")


@dataclass(frozen=True)
class Method:
    """One row of a table and, for LLM methods, the job that trains or decodes it."""

    name: str  # the {method} wildcard and file name
    kind: str  # one of KINDS
    label: str  # row label in tables and figures
    table: str  # one of TABLES
    loss: str | None = None  # flowrec.tune.objectives.LOSSES key (tuned and aligned methods)
    start: str | None = None  # the tuned method whose model training starts from (None: the base model)
    reference: str | None = None  # the method whose model is the frozen reference (aligned)
    model: str | None = None  # the trained model a decoded row decodes (tuned/aligned: their own)
    decoding: str = "beam"  # one of DECODINGS
    needs: frozenset[str] = frozenset()  # subset of NEEDS
    settings: tuple[str, ...] = ()  # config blocks the loss reads, e.g. ("flower",), ("align",)
    overrides: Mapping = field(default_factory=dict)  # fixed values of those blocks (flower_vocab)
    activation_factor: float = 1.0  # activation memory relative to an SFT step (flowrec.resources)
    runtime_factor: float = 1.0  # wall time relative to an SFT job of the same budget
    family: str | None = None  # aligned: the algorithm (sdpo, ...), shared by its B_ and F_ rows

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.table not in TABLES or self.decoding not in DECODINGS:
            raise ValueError(
                f"method {self.name}: kind/table/decoding {self.kind}/{self.table}/{self.decoding}"
            )
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"method {self.name}: unknown needs {sorted(unknown)}; expected of {NEEDS}")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def trains(self) -> bool:
        """Whether rule tune trains a model of this name."""
        return self.kind in ("tuned", "aligned")

    @property
    def decodes(self) -> str | None:
        """The trained model rule decode loads for this row (None: the row is not decoded)."""
        if self.kind == "decoded":
            return self.model
        return self.name if self.trains else None


# Aligned rows start from, and are held to, one of these tuned models (the paper's B_ and F_ prefixes).
ALIGN_STARTS = {"bigrec": "B", "flower": "F"}


def _aligned(
    family: str, label: str, loss: str, needs: frozenset[str], factor: float, overrides: Mapping | None = None
) -> list[Method]:
    """The B_ and F_ rows of one alignment algorithm (RQ3): policy and frozen reference both start as
    the same tuned model. `overrides`: fixed settings of the algorithm (RosePO's one popular negative)."""
    return [
        Method(
            name=f"{prefix.lower()}_{family}",
            kind="aligned",
            label=f"{prefix}_{label}",
            table="rq3",
            loss=loss,
            start=start,
            reference=start,
            needs=needs,
            settings=("align",),
            overrides=overrides or {},
            activation_factor=factor,
            runtime_factor=factor,
            family=family,
        )
        for start, prefix in ALIGN_STARTS.items()
    ]


_PREFERENCES = frozenset({"preferences"})
# A DPO step scores 1 + k responses per prompt with the policy and again with the reference.
_DPO_FACTOR = 2.0
_METHODS: list[Method] = [
    Method("random", "reference", "Random", "main"),
    Method("mostpop", "reference", "MostPop", "main"),
    Method("sasrec", "sasrec", "SASRec", "main"),
    Method("bigrec", "tuned", "BIGRec", "main", loss="sft"),
    Method("temp", "decoded", "Temp", "main", model="bigrec", decoding="temp"),
    Method("d3", "decoded", "D3", "main", model="bigrec", decoding="d3"),
    Method("d3_noassist", "decoded", "D3 (no assistant)", "main", model="bigrec", decoding="d3_noassist"),
    Method("ifairlrs", "tuned", "IFairLRS", "main", loss="sft", needs=frozenset({"groups"})),
    Method(
        "flower",
        "tuned",
        "Flower",
        "main",
        loss="flower",
        needs=frozenset({"p_ui_train"}),
        settings=("flower",),
        activation_factor=FLOWER_FACTOR,
        runtime_factor=1.5,
    ),
    # Flower with SubTB's log pi normalised over the vocabulary, the ablation of the normalisation the
    # `flower` row uses (docs/method.md section 4).
    Method(
        "flower_vocab",
        "tuned",
        "Flower (SubTB over vocab)",
        "main",
        loss="flower",
        needs=frozenset({"p_ui_train"}),
        settings=("flower",),
        overrides={"normalise": "vocab"},
        activation_factor=FLOWER_FACTOR,
        runtime_factor=1.5,
    ),
    # RQ3 (Table 5): preference alignment from BIGRec (B_) and from Flower (F_), docs/method.md section 10.
    # S-DPO and DMPO: align.negatives rejected titles drawn uniformly; RosePO: DPO against one rejected
    # title drawn by training-history popularity (the published RosePO, without its smoothing term).
    *_aligned("sdpo", "S-DPO", "sdpo", _PREFERENCES, _DPO_FACTOR, {"sampler": "uniform"}),
    *_aligned("dmpo", "DMPO", "dmpo", _PREFERENCES, _DPO_FACTOR, {"sampler": "uniform"}),
    *_aligned(
        "rosepo", "RosePO", "dpo", _PREFERENCES, _DPO_FACTOR, {"sampler": "popularity", "negatives": 1}
    ),
    # PPO samples a title per prompt and scores it with the policy, its value head and the reference.
    *_aligned("ppo", "PPO", "ppo", frozenset({"p_ui_train"}), FLOWER_FACTOR + 1.0),
]
REGISTRY: Mapping[str, Method] = MappingProxyType({m.name: m for m in _METHODS})

# RQ1 rows (rules/distfit.smk). trl 1.16 ships no PPO trainer, so the reward-maximising RL row is GRPO
# (flowrec.distfit.trl); flower_published is the published RQ1 code's recipe (docs/method.md section 8).
_DISTFIT: list[Method] = [
    Method("base", "distfit", "Base", "distfit"),
    Method("sft", "distfit", "SFT (BIGRec)", "distfit", loss="sft"),
    Method("dpo", "distfit", "DPO", "distfit", loss="dpo", activation_factor=2.0),
    Method("grpo", "distfit", "GRPO", "distfit", loss="grpo", activation_factor=2.0),
    Method("flower", "distfit", "Flower", "distfit", loss="flower", activation_factor=FLOWER_FACTOR),
    Method(
        "flower_vocab",
        "distfit",
        "Flower (SubTB over vocab)",
        "distfit",
        loss="flower",
        activation_factor=FLOWER_FACTOR,
    ),
    Method(
        "flower_published",
        "distfit",
        "Flower (published RQ1 recipe)",
        "distfit",
        loss="flower_published",
        activation_factor=FLOWER_FACTOR,
    ),
]
DISTFIT: Mapping[str, Method] = MappingProxyType({m.name: m for m in _DISTFIT})


def get(name: str) -> Method:
    """The recommendation method `name`; a ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {list(REGISTRY)}")
    return REGISTRY[name]


def names(*, kind: str | None = None, table: str | None = None) -> list[str]:
    """Registry names (registry order) of the given kind and table."""
    return [
        m.name for m in _METHODS if (kind is None or m.kind == kind) and (table is None or m.table == table)
    ]


def trained() -> list[str]:
    """Methods rule tune trains (tuned and aligned)."""
    return [m.name for m in _METHODS if m.trains]


def decoded() -> dict[str, str]:
    """Rows rule decode writes -> the trained model each decodes."""
    return {m.name: m.decodes for m in _METHODS if m.decodes is not None}


def aligned(families: list[str] | tuple[str, ...], starts: list[str] | tuple[str, ...]) -> list[str]:
    """The aligned rows of these algorithms and starting models, B_ before F_ within a family."""
    unknown = sorted(set(families) - {m.family for m in _METHODS if m.kind == "aligned"})
    if unknown:
        raise ValueError(f"align.methods: unknown {unknown}; expected of {families_of_kind('aligned')}")
    bad_start = sorted(set(starts) - set(ALIGN_STARTS))
    if bad_start:
        raise ValueError(f"align.starts: unknown {bad_start}; expected of {list(ALIGN_STARTS)}")
    return [m.name for f in families for m in _METHODS if m.family == f and m.start in starts]


def families_of_kind(kind: str) -> list[str]:
    return list(dict.fromkeys(m.family for m in _METHODS if m.kind == kind and m.family))


def label(name: str) -> str:
    """The table label of a recommendation method (the name itself when unknown)."""
    return REGISTRY[name].label if name in REGISTRY else name


def distfit_label(name: str) -> str:
    return DISTFIT[name].label if name in DISTFIT else name
