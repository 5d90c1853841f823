"""LUME (SemEval-2025 Task 4): regurgitation (ROUGE-L recall) and knowledge (exact match) per split and task, and the
task score, from generations: `hf_unlearn.metrics.lume.lume_scores_from_generations`, as an `evaluate` module."""

import datasets
import evaluate

from hf_unlearn.metrics.lume import lume_scores_from_generations

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: the model's greedy completion of each row's input.
    references: each row's expected output.
    ids: each row's LUME id (its ending, `sc` or `qa` and a digit, says how the row is scored).
    tasks: each row's task (Task1, Task2, Task3, ...).
    splits: "forget" or "retain" for each row.
Returns:
    The task script's keys: `forget-set`, `retain-set`, `aggregated-terms`, `harmonic-mean-task-aggregate`.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Lume(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="SemEval-2025 Task 4: Unlearning sensitive content from Large Language Models (arXiv:2504.02883)",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({name: datasets.Value("string") for name in
                                        ("predictions", "references", "ids", "tasks", "splits")}),
        )

    def _compute(self, predictions, references, ids, tasks, splits):
        unknown = sorted({s for s in splits} - {"forget", "retain"})
        if unknown:
            raise ValueError(f"splits must be 'forget' or 'retain', got {unknown}")
        sides = {"forget": ([], []), "retain": ([], [])}
        for generated, expected, row_id, task, split in zip(predictions, references, ids, tasks, splits):
            rows, generations = sides[split]
            rows.append({"id": row_id, "task": task, "output": expected})
            generations.append(generated)
        return lume_scores_from_generations(*sides["forget"], *sides["retain"])
