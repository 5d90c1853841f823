"""MMLU accuracy through lm-evaluation-harness, on a model held in memory.

Online, `evaluate_mmlu(model, tokenizer)` runs lm-eval's own `mmlu_<subject>` tasks (data from the Hub's
`cais/mmlu`). Offline, `data_dir` points at local `test.jsonl` / `dev.jsonl` files in the `cais/mmlu` schema
(`{question, subject, choices[4], answer: 0..3}`); the subject tasks are then written as YAML files to a temporary
folder and loaded with `TaskManager(include_path=..., include_defaults=False)`. Those YAMLs reproduce lm-eval's
`mmlu/default/_default_template_yaml` and its generated `mmlu_<subject>.yaml` files field by field (prompt,
choices, few-shot pool `dev` taken in order, per-subject description); only the data source differs.

The task reports MMLU as the micro average over all questions (open-instruct's `average_acc`): each subject's
accuracy weighted by its number of questions. Offline, the subject tasks also form a group with lm-eval's
`weight_by_size: true` aggregate (as in its `_mmlu.yaml`), which reports the same number.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from hf_unlearn.metrics._model_state import evaluation_mode

logger = logging.getLogger(__name__)

GROUP = "hf_unlearn_mmlu"
# lm-eval's warnings that only repeat what we asked for: one per subject for `num_fewshot`, two for a model passed
# in memory. They are dropped; a prompt cut to the model's length is counted; any other warning is passed on once.
EXPECTED_LM_EVAL_WARNINGS = (
    "Overwriting default num_fewshot",
    "`pretrained` model kwarg is not of type `str`",
    "Passed an already-initialized model through `pretrained`",
)
TRUNCATED = "Combined length of context"

# lm-eval's mmlu/default/_default_template_yaml, minus the Hub data source (see `_subject_task_config`).
MMLU_TEMPLATE: dict[str, Any] = {
    "test_split": "test",
    "fewshot_split": "dev",
    "fewshot_config": {"sampler": "first_n"},
    "output_type": "multiple_choice",
    "doc_to_text": (
        "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
    ),
    "doc_to_choice": ["A", "B", "C", "D"],
    "doc_to_target": "answer",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    "metadata": {"version": 1.0},
}


def subject_description(subject: str) -> str:
    """The per-subject description lm-eval's `_generate_configs.py` writes into each `mmlu_<subject>.yaml`."""
    return f"The following are multiple choice questions (with answers) about {' '.join(subject.split('_'))}.\n\n"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _subject_task_config(subject: str, test_file: Path, dev_file: Path, cache_dir: Path) -> dict[str, Any]:
    """One subject's task, as lm-eval's `mmlu_<subject>.yaml` (+ template) but reading local JSON lines."""
    return {
        "task": f"mmlu_{subject}",
        "task_alias": subject,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(test_file), "dev": str(dev_file)},
            # The Arrow cache goes next to the files, so a temporary folder takes it along when it is removed.
            "cache_dir": str(cache_dir),
        },
        "description": subject_description(subject),
        **copy.deepcopy(MMLU_TEMPLATE),
    }


def write_mmlu_tasks(data_dir: str | Path, out_dir: str | Path, subjects: Iterable[str] | None = None) -> list[str]:
    """Write one lm-eval task YAML (and its data, split by subject) per subject, plus a micro-averaging group.

    `data_dir` holds `test.jsonl` and `dev.jsonl` in the `cais/mmlu` schema; rows keep their file order, so the
    few-shot examples are the first `dev` rows of each subject, as on the Hub. Returns the subject task names.
    """
    import yaml

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    splits: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split in ("test", "dev"):
        by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in _read_jsonl(data_dir / f"{split}.jsonl"):
            by_subject[row["subject"]].append(row)
        splits[split] = by_subject
    chosen = sorted(splits["test"]) if subjects is None else list(subjects)
    missing = [s for s in chosen if s not in splits["test"] or s not in splits["dev"]]
    if missing:
        raise ValueError(f"subjects without test or dev rows in {data_dir}: {missing}")

    task_names = []
    for subject in chosen:
        files = {}
        for split in ("test", "dev"):
            files[split] = out_dir / "data" / subject / f"{split}.jsonl"
            files[split].parent.mkdir(parents=True, exist_ok=True)
            with open(files[split], "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in splits[split][subject])
        config = _subject_task_config(subject, files["test"], files["dev"], out_dir / "datasets_cache")
        (out_dir / f"mmlu_{subject}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        task_names.append(config["task"])
    group = {
        "group": GROUP,
        "task": task_names,
        # As lm-eval's _mmlu.yaml: weighting subjects by size gives the micro average over questions.
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }
    (out_dir / f"{GROUP}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    return task_names


class _LmEvalWarnings(logging.Handler):
    """Takes lm-eval's warnings during a run: drops the expected ones, counts truncated prompts, keeps the others."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.truncated = 0
        self.others: dict[str, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(TRUNCATED):
            self.truncated += 1
        elif not message.startswith(EXPECTED_LM_EVAL_WARNINGS):
            self.others.setdefault(message, record)


@contextlib.contextmanager
def quiet_lm_eval():
    """lm-eval's and datasets' per-subject output off while lm-eval runs, restored after; yields `_LmEvalWarnings`.

    All 57 MMLU subjects otherwise print about 230 lines: a num_fewshot warning and a prompt-building bar per subject
    (lm-eval), two "Generating split" bars per subject (datasets, loading the JSON files). lm-eval's progress bar over
    the requests stays.
    """
    import datasets
    import lm_eval.api.task

    lm_logger = logging.getLogger("lm_eval")
    saved = lm_logger.level, lm_logger.handlers[:], lm_logger.propagate
    caught = _LmEvalWarnings()
    lm_logger.setLevel(logging.WARNING)
    lm_logger.handlers, lm_logger.propagate = [caught], False
    # An explicit HF_DATASETS_DISABLE_PROGRESS_BARS wins over code (datasets warns when overridden): leave it be.
    bars = datasets.is_progress_bar_enabled() and "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ
    if bars:
        datasets.disable_progress_bars()
    # lm-eval draws its prompt-building bar per subject with a bare `tqdm(...)` that takes no option to turn it off.
    task_tqdm = getattr(lm_eval.api.task, "tqdm", None)
    if task_tqdm is not None:
        lm_eval.api.task.tqdm = functools.partial(task_tqdm, disable=True)
    try:
        yield caught
    finally:
        if task_tqdm is not None:
            lm_eval.api.task.tqdm = task_tqdm
        if bars:
            datasets.enable_progress_bars()
        lm_logger.setLevel(saved[0])
        lm_logger.handlers, lm_logger.propagate = saved[1], saved[2]


def run_lm_eval(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: list[str | dict[str, Any]],
    task_manager: Any,
    num_fewshot: int,
    limit: int | float | None,
    batch_size: int,
    log_samples: bool,
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on the in-memory model; its training mode and the caller's tokenizer are kept.

    lm-eval's per-subject output is held back (`quiet_lm_eval`): prompts cut to the model's length are reported in one
    warning, any unexpected lm-eval warning once, and a one-line summary is logged at INFO.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with evaluation_mode(model), quiet_lm_eval() as caught:
        # HFLM may give the tokenizer a pad token: hand it a copy so the caller's stays as it was.
        lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=task_manager,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=log_samples,
            bootstrap_iters=0,
        )
    for record in caught.others.values():
        logging.getLogger(record.name).handle(record)
    if caught.truncated:
        logger.warning(
            "lm-eval: %d requests (prompt + answer) were longer than the model's %d tokens; it cut them from the left, "
            "so they lost their first few-shot examples.", caught.truncated, lm.max_length,
        )
    if results is not None:
        subjects = [t for t in results.get("n-samples", {}) if t.startswith("mmlu_")]
        logger.info("lm-eval: %d subjects, %d-shot, %d questions", len(subjects), num_fewshot,
                    sum(int(results["n-samples"][t]["effective"]) for t in subjects))
    return results


def evaluate_mmlu(
    model: torch.nn.Module,
    tokenizer: Any,
    data_dir: str | Path | None = None,
    num_fewshot: int = 5,
    subjects: Sequence[str] | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    return_lm_eval_results: bool = False,
) -> dict[str, Any] | None:
    """MMLU accuracy of an in-memory model with lm-eval.

    Args:
        data_dir: folder with `test.jsonl` and `dev.jsonl` in the `cais/mmlu` schema; None uses lm-eval's Hub tasks.
        num_fewshot: examples from `dev` before each question (5, open-instruct's default `--ntrain`).
        subjects: subject names (`"anatomy"`, ...); None for all 57.
        limit: at most this many questions per subject (a fraction for a share), as lm-eval's `--limit`.
        batch_size: lm-eval's batch size.
        return_lm_eval_results: also return lm-eval's whole result dict (with per-question samples) as `lm_eval`.

    Returns:
        `average_acc` (micro average over all questions scored), `subject_acc` ({subject: accuracy}) and
        `num_questions`; None in a process launched with a `LOCAL_RANK` other than 0. lm-eval runs an in-memory
        model as one process wherever it is called, so several processes calling this (as ZeRO-3 needs: every
        forward pass is collective) all score every question, but only `LOCAL_RANK` 0 gets lm-eval's results back.
    """
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="hf_unlearn_mmlu_") as tmp:
        if data_dir is not None:
            write_mmlu_tasks(data_dir, tmp, subjects)
            task_manager = TaskManager(include_path=tmp, include_defaults=False)
            tasks: list[str | dict[str, Any]] = [GROUP]
        else:
            task_manager = TaskManager()
            tasks = ["mmlu"] if subjects is None else [f"mmlu_{s}" for s in subjects]
        results = run_lm_eval(
            model, tokenizer, tasks, task_manager, num_fewshot, limit, batch_size, return_lm_eval_results
        )
    if results is None:  # simple_evaluate builds its results on LOCAL_RANK 0 only
        return None
    return mmlu_summary(results, return_lm_eval_results)


def mmlu_summary(results: dict[str, Any], keep_results: bool = False) -> dict[str, Any]:
    """Read `average_acc`, per-subject accuracy and the question count out of lm-eval's result dict.

    `average_acc` weights each subject's accuracy by its number of questions scored (lm-eval's `n-samples`), i.e.
    the micro average over questions; groups (`mmlu`, `mmlu_stem`, ...) have no `n-samples` entry and are skipped.
    """
    subject_acc = {}
    correct = 0.0
    num_questions = 0
    for task, metrics in results["results"].items():
        if task.startswith("mmlu_") and "acc,none" in metrics and task in results["n-samples"]:
            n = int(results["n-samples"][task]["effective"])
            subject_acc[task.removeprefix("mmlu_")] = float(metrics["acc,none"])
            correct += float(metrics["acc,none"]) * n
            num_questions += n
    if num_questions == 0:
        raise ValueError("lm-eval scored no MMLU question")
    summary: dict[str, Any] = {
        "average_acc": correct / num_questions,
        "subject_acc": dict(sorted(subject_acc.items())),
        "num_questions": num_questions,
    }
    if keep_results:
        summary["lm_eval"] = results
    return summary
