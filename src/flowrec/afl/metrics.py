"""AFL's metrics (docs/method.md section 9): HR@1 of the final item, precision/recall/F1 of "yes"."""

from __future__ import annotations

import numpy as np


def hr_at_1(final: np.ndarray, target: np.ndarray) -> float:
    """Share of users whose one recommended item is the true next item (0.0 for no users)."""
    final, target = np.asarray(final), np.asarray(target)
    if final.shape != target.shape:
        raise ValueError(f"hr_at_1: {final.shape} recommendations for {target.shape} targets")
    return float((final == target).mean()) if len(final) else 0.0


def precision_recall_f1(said_yes: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the "yes" answers against the true labels (positive = true next item),
    by sklearn.metrics.precision_recall_fscore_support.

    A measure whose denominator is zero (no "yes" at all, or no positives) is 0.0, as is F1 when both
    precision and recall are 0 (zero_division=0.0).
    """
    from sklearn.metrics import precision_recall_fscore_support  # only the AFL stages need sklearn

    said_yes, positive = np.asarray(said_yes, dtype=bool), np.asarray(positive, dtype=bool)
    if said_yes.shape != positive.shape:
        raise ValueError(f"precision_recall_f1: {said_yes.shape} answers for {positive.shape} labels")
    # labels=[True]: the "yes" class alone, also when one of the two arrays holds a single class
    precision, recall, f1, _ = precision_recall_fscore_support(
        positive, said_yes, labels=[True], average=None, zero_division=0.0
    )
    return {"precision": float(precision[0]), "recall": float(recall[0]), "f1": float(f1[0])}
