"""One table of the evaluation's result keys, read by every place that logs, prints or plots a score.

A score has three names: its key in the results of `evaluate_model` (the task script's layout, as
`evaluation_results.jsonl` holds it), its flat log key (`flatten_scores`: what `trainer.log`, TensorBoard and the
record see) and a plain name for people, with which way is better.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SPLITS = ("forget", "retain")
METRICS = ("regurgitation", "knowledge")
METRIC_WORDS = {"regurgitation": "regurgitation (ROUGE-L)", "knowledge": "knowledge (exact match)"}
# Keys of one split's block in the results: the overall means, then per task.
OVERALL_KEYS = {"regurgitation": "overall-regurgitation-score", "knowledge": "overall-knowledge-score"}
TASK_KEYS = {"regurgitation": "regurgitation-score", "knowledge": "knowledge-score"}


@dataclass(frozen=True)
class Score:
    result_key: str  # in evaluate_model's results
    log_key: str  # in the logs
    label: str
    better: str

    def value(self, results: Mapping[str, Any]) -> float | None:
        """This score in `results`, or None when absent (the final score is -1 there when not computed)."""
        value = results.get(self.result_key)
        return None if value is None or (self.result_key == "aggregate-score" and value == -1) else value


SINGLE_SCORES = (
    Score("harmonic-mean-task-aggregate", "lume/task_score", "task score", "higher is better"),
    Score("mia_loss_auc", "mia/auc", "MIA loss AUC", "0.5 is best"),
    Score("mia_final_score", "mia/score", "MIA score", "higher is better"),
    Score("mia_zlib_auc", "mia/zlib_auc", "MIA zlib AUC", "0.5 is best"),
    Score("mia_min_k_auc", "mia/min_k_auc", "MIA Min-K% AUC", "0.5 is best"),
    Score("mia_min_k_plus_plus_auc", "mia/min_k_plus_plus_auc", "MIA Min-K%++ AUC", "0.5 is best"),
    Score("mia_exposed_share", "mia/exposed_share", "members below the unseen 5th-percentile loss", "about 0.05 is best"),
    Score("mmlu_average", "mmlu/acc", "MMLU accuracy", "higher is better"),
    Score("aggregate-score", "lume/final_score", "final score", "higher is better"),
    # TOFU's (`hf_unlearn.metrics.tofu.evaluate_tofu`, whose results are flat already: result key = log key)
    Score("tofu/forget/probability", "tofu/forget/probability", "TOFU forget answer probability", "lower is better"),
    Score("tofu/forget/rouge", "tofu/forget/rouge", "TOFU forget ROUGE-L", "lower is better"),
    Score("tofu/forget/truth_ratio", "tofu/forget/truth_ratio", "TOFU forget truth-ratio score", "lower is better"),
    Score("tofu/model_utility", "tofu/model_utility", "TOFU model utility", "higher is better"),
    Score("tofu/forget_quality", "tofu/forget_quality", "TOFU forget quality (KS p-value)", "higher is better"),
)
BY_LOG_KEY = {s.log_key: s for s in SINGLE_SCORES}
SCORE_PREFIXES = ("lume/", "mia/", "mmlu/", "tofu/")


def split_log_key(split: str, metric: str, task: str | None = None) -> str:
    return f"lume/{split}/{task}/{metric}" if task else f"lume/{split}/{metric}"


def score_label(key: str) -> tuple[str, str | None]:
    """A log key's plain name and which way is better: `lume/forget/regurgitation` -> `("forget regurgitation
    (ROUGE-L)", "lower is better")`, `lume/retain/Task2/knowledge` -> `("retain Task2 knowledge (exact match)",
    "higher is better")`; an unknown key comes back as it is, with None."""
    if key in BY_LOG_KEY:
        return BY_LOG_KEY[key].label, BY_LOG_KEY[key].better
    parts = key.split("/")
    if len(parts) in (3, 4) and parts[0] == "lume" and parts[1] in SPLITS and parts[-1] in METRIC_WORDS:
        better = "lower is better" if parts[1] == "forget" else "higher is better"
        return " ".join(parts[1:-1] + [METRIC_WORDS[parts[-1]]]), better
    return key, None


def flatten_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """Scalar log keys for TensorBoard/W&B: `lume/task_score`, `lume/forget/Task2/regurgitation`, `mia/auc`,
    `mmlu/acc`, `lume/final_score`, ... (no text, no ids)."""
    out: dict[str, float] = {}
    for split in SPLITS:
        block = results.get(f"{split}-set")
        if not block:
            continue
        for metric in METRICS:
            if block.get(OVERALL_KEYS[metric]) is not None:
                out[split_log_key(split, metric)] = block[OVERALL_KEYS[metric]]
        for task, scores in block.items():
            if isinstance(scores, Mapping):
                for metric in METRICS:
                    if scores.get(TASK_KEYS[metric]) is not None:
                        out[split_log_key(split, metric, task)] = scores[TASK_KEYS[metric]]
    for score in SINGLE_SCORES:
        if score.value(results) is not None:
            out[score.log_key] = score.value(results)
    return {k: float(v) for k, v in out.items()}


def table_order(keys: Iterable[str]) -> list[str]:
    """The score log keys among `keys` in the order tables show them: each split's overall scores, then each task's
    (in task order), then the single scores in `SINGLE_SCORES` order; keys that are not scores are left out."""
    keys = set(keys)
    tasks = sorted({k.split("/")[2] for k in keys if k.count("/") == 3 and k.startswith("lume/")})
    order = [split_log_key(s, m) for s in SPLITS for m in METRICS]
    order += [split_log_key(s, m, t) for s in SPLITS for t in tasks for m in METRICS]
    order += [s.log_key for s in SINGLE_SCORES]
    return [k for k in order if k in keys]
