"""The rows of the distribution-fitting experiment (RQ1): the methods and their labels in tables and figures.

Torch-free, so that the figure stage can name its panels in envs/report.yaml.
"""

# flower_published: the published RQ1 code's recipe (docs/method.md section 8), beside the paper's text.
TUNED = ("sft", "dpo", "grpo", "flower", "flower_vocab", "flower_published")
METHODS = ("base", *TUNED)
# The tuning set itself is an i.i.d. draw of the same size from T: its divergence from T is the floor
# that sampling noise alone sets for any model (a perfect model's samples are such a draw too).
TUNING_SET = "tuning_set"
LABELS = {
    "base": "Base",
    "sft": "SFT (BIGRec)",
    "dpo": "DPO",
    "grpo": "GRPO",
    "flower": "Flower",
    "flower_vocab": "Flower (SubTB over vocab)",
    "flower_published": "Flower (published RQ1 recipe)",
    TUNING_SET: "Tuning set (draw from T)",
}
