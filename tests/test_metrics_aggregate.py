"""The final score and the task script's output layout."""

from __future__ import annotations

import json
import warnings

import pytest

from hf_unlearn.metrics.aggregate import MMLU_THRESHOLD, aggregate_results, check_mmlu, final_score

LUME = {
    "forget-set": {"overall-regurgitation-score": 0.2, "overall-knowledge-score": 0.1},
    "retain-set": {"overall-regurgitation-score": 0.9, "overall-knowledge-score": 0.8},
    "aggregated-terms": [0.8, 0.9, 0.9, 0.8],
    "harmonic-mean-task-aggregate": 0.6,
    "generations": {"forget": ["never copied"], "retain": []},
}
MIA = {
    "mia_loss_acc": 0.7,
    "mia_loss_auc": 0.7,
    "mia_final_score": 0.6,
    "mia_zlib_auc": 0.65,
    "mia_min_k_auc": 0.6,
    "mia_min_k_plus_plus_auc": 0.55,
    "member_losses": [1.0],
}


def test_final_score_is_the_mean_of_the_three():
    assert final_score(0.431, 0.657, 0.461) == pytest.approx((0.431 + 0.657 + 0.461) / 3)
    # The reported NPO + LoRA run: task 0.431, MIA 0.657, MMLU 0.461 -> final 0.516.
    assert round(final_score(0.431, 0.657, 0.461), 3) == 0.516


def test_aggregate_with_everything():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0.5 is above the threshold: no warning
        results = aggregate_results(LUME, MIA, {"average_acc": 0.5, "subject_acc": {}})
    assert results["aggregate-score"] == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert results["mmlu_average"] == 0.5
    assert results["mia_loss_acc"] == 0.7 and results["mia_final_score"] == 0.6
    assert "generations" not in results and "member_losses" not in results
    json.dumps(results)  # one JSON line, as the task's evaluation_results.jsonl


def test_aggregate_is_minus_one_without_mmlu_or_mia():
    assert aggregate_results(LUME)["aggregate-score"] == -1
    assert aggregate_results(LUME, mia=MIA)["aggregate-score"] == -1
    assert aggregate_results(LUME, mmlu=0.5)["aggregate-score"] == -1


def test_low_mmlu_warns_once(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a UserWarning too (which printed the sentence twice)
        results = aggregate_results(LUME, MIA, 0.3)
    assert results["aggregate-score"] == pytest.approx((0.6 + 0.6 + 0.3) / 3)  # still computed, as the script does
    assert caplog.text.count("MMLU average 0.3000 is below 0.371") == 1
    assert MMLU_THRESHOLD == 0.371
    assert check_mmlu(0.371) is True
