"""The rows of the distribution-fitting experiment (RQ1): the methods and their labels in tables and figures,
read from the method registry (flowrec.methods.DISTFIT).

Torch-free, so that the figure stage can name its panels in envs/report.yaml.
"""

from flowrec.methods import DISTFIT

TUNED = tuple(name for name, method in DISTFIT.items() if method.loss)
METHODS = tuple(DISTFIT)
# The tuning set itself is an i.i.d. draw of the same size from T: its divergence from T is the floor
# that sampling noise alone sets for any model (a perfect model's samples are such a draw too).
TUNING_SET = "tuning_set"
LABELS = {
    **{name: method.label for name, method in DISTFIT.items()},
    TUNING_SET: "Tuning set (draw from T)",
}
