"""An evaluation history (one record per evaluation: ``{"step": ..., "modes": {mode: evaluate(...)}}``) in a table."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["score_table"]


def score_table(history: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Final (last evaluation) and best (over evaluations) scores of each acting mode.

    The best evaluation is the one with the highest mean normalized score, or mean return when the dataset has no
    reference scores. Modes never evaluated are left out.

    Args:
        history: the evaluation records, in order; each ``record["modes"][mode]`` is a result of
            :func:`~torchrl_dtql.evaluation.evaluate`.
        modes: the acting modes to report, in order.

    Examples:
        >>> def result(score):
        ...     stats = {"mean": score, "std": 0.0, "stderr": 0.0}
        ...     return {"normalized_score": stats, "return": stats}
        >>> history = [{"step": 1, "modes": {"mean": result(5.0)}}, {"step": 2, "modes": {"mean": result(3.0)}}]
        >>> table = score_table(history, ["mean"])["mean"]
        >>> table["final_normalized_score"], table["best_normalized_score"], table["best_step"]
        (3.0, 5.0, 1)
    """
    table = {}
    for mode in modes:
        records = [(record["step"], record["modes"][mode]) for record in history if mode in record["modes"]]
        if not records:
            continue
        final_step, final = records[-1]
        key = "normalized_score" if final["normalized_score"]["mean"] is not None else "return"
        best_step, best = max(records, key=lambda item: item[1][key]["mean"])
        table[mode] = {
            "final_normalized_score": final["normalized_score"]["mean"],
            "final_normalized_score_stderr": final["normalized_score"]["stderr"],
            "final_return": final["return"]["mean"],
            "final_return_std": final["return"]["std"],
            "final_step": final_step,
            "best_normalized_score": best["normalized_score"]["mean"],
            "best_return": best["return"]["mean"],
            "best_step": best_step,
        }
    return table
