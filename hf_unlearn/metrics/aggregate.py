"""The LUME final score: mean of the task score, the MIA score and MMLU accuracy, in the script's output layout."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# 75% of the 7B target model's MMLU before unlearning: below it the task flagged a submission.
MMLU_THRESHOLD = 0.371


def final_score(task_score: float, mia_final_score: float, mmlu_average: float) -> float:
    """`mean(task score, MMLU accuracy, MIA score)`."""
    return float(statistics.mean([task_score, mmlu_average, mia_final_score]))


def check_mmlu(mmlu_average: float, threshold: float = MMLU_THRESHOLD) -> bool:
    """Warn (one log line) when MMLU is below the task's threshold; True when it is not.

    A log line only: a `UserWarning` as well printed the same sentence twice.
    """
    if mmlu_average < threshold:
        logger.warning(
            "MMLU average %.4f is below %s: the task would flag this model (MMLU must stay above 75%% of the 7B "
            "model's score before unlearning)", mmlu_average, threshold,
        )
        return False
    return True


def aggregate_results(
    lume: Mapping[str, Any],
    mia: Mapping[str, Any] | None = None,
    mmlu: Mapping[str, Any] | float | None = None,
) -> dict[str, Any]:
    """One result dict in the layout of the task's `evaluation_results.jsonl` line.

    Args:
        lume: `score_lume` / `lume_scores_from_generations` output (its `generations`, if any, are not copied).
        mia: `score_mia` output; its `mia_*` keys are copied.
        mmlu: `evaluate_mmlu` output or its `average_acc` as a float; stored as `mmlu_average`.

    `aggregate-score` is the final score, or -1 when MIA or MMLU is missing, as in the script.
    """
    results: dict[str, Any] = {key: value for key, value in lume.items() if key != "generations"}
    if mia is not None:
        results.update({key: value for key, value in mia.items() if key.startswith("mia_")})
    if mmlu is not None:
        results["mmlu_average"] = float(mmlu if isinstance(mmlu, (int, float)) else mmlu["average_acc"])
        check_mmlu(results["mmlu_average"])
    results["aggregate-score"] = -1
    if mia is not None and mmlu is not None:
        results["aggregate-score"] = final_score(
            results["harmonic-mean-task-aggregate"], results["mia_final_score"], results["mmlu_average"]
        )
    return results
