"""MMLU through lm-eval from local files: the task definition is lm-eval's own, and so is the accuracy.

Kept small (a tiny model, 2 subjects, 10 questions each, 1 or 2 few-shot examples). The Hub path (lm-eval's own
`mmlu_*` tasks) needs a network and is not tested here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import lm_eval
import lm_eval.api.task
import pytest
import yaml
from lm_eval.tasks import TaskManager

from hf_unlearn.evaluation import evaluate_model
from hf_unlearn.metrics import MMLU_THRESHOLD
from hf_unlearn.metrics.mmlu import MMLU_TEMPLATE, evaluate_mmlu, run_lm_eval, subject_description, write_mmlu_tasks

LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
SUBJECTS = ["anatomy", "high_school_us_history"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mmlu_dir(lume_dir) -> Path:
    path = lume_dir.parent / "mmlu"
    assert (path / "test.jsonl").is_file() and (path / "dev.jsonl").is_file()
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_template_is_lm_evals_own():
    installed = yaml.safe_load((LM_EVAL_MMLU / "_default_template_yaml").read_text())
    assert installed.pop("dataset_path") == "cais/mmlu"
    assert MMLU_TEMPLATE == installed
    subject_files = sorted(LM_EVAL_MMLU.glob("mmlu_*.yaml"))
    assert len(subject_files) == 57
    for path in subject_files:
        config = yaml.safe_load(path.read_text())
        subject = config["dataset_name"]
        assert subject_description(subject) == config["description"]
        assert config["task"] == f"mmlu_{subject}" and config["task_alias"] == subject


def test_written_tasks_split_the_data_by_subject(mmlu_dir, tmp_path):
    names = write_mmlu_tasks(mmlu_dir, tmp_path, SUBJECTS)
    assert names == [f"mmlu_{s}" for s in SUBJECTS]
    test_rows = [r for r in read_jsonl(mmlu_dir / "test.jsonl") if r["subject"] == "anatomy"]
    assert read_jsonl(tmp_path / "data" / "anatomy" / "test.jsonl") == test_rows
    with pytest.raises(ValueError):
        write_mmlu_tasks(mmlu_dir, tmp_path, ["not_a_subject"])


def test_prompt_is_the_mmlu_prompt(tiny_model, tokenizer, mmlu_dir):
    result = evaluate_mmlu(
        tiny_model,
        tokenizer,
        data_dir=mmlu_dir,
        num_fewshot=2,
        subjects=["anatomy"],
        limit=2,
        return_lm_eval_results=True,
    )
    dev = [r for r in read_jsonl(mmlu_dir / "dev.jsonl") if r["subject"] == "anatomy"]
    test = [r for r in read_jsonl(mmlu_dir / "test.jsonl") if r["subject"] == "anatomy"]

    def block(row):
        choices = "".join(f"\n{letter}. {choice}" for letter, choice in zip("ABCD", row["choices"]))
        return f"{row['question'].strip()}{choices}\nAnswer:"

    expected = (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        + "".join(f"{block(r)} {'ABCD'[r['answer']]}\n\n" for r in dev[:2])
        + block(test[0])
    )
    sample = result["lm_eval"]["samples"]["mmlu_anatomy"][0]
    assert {arg[0] for arg in sample["arguments"]} == {expected}  # one (context, continuation) pair per choice
    assert [arg[1] for arg in sample["arguments"]] == [" A", " B", " C", " D"]


def test_accuracy_equals_lm_evals_own_run(tiny_model, tokenizer, mmlu_dir, tmp_path):
    """`average_acc` = the micro average of lm-eval's per-question results = its size-weighted group score, and
    per-subject accuracies equal an independent lm-eval run whose YAMLs include lm-eval's installed template."""
    tiny_model.train()
    ours = evaluate_mmlu(
        tiny_model,
        tokenizer,
        data_dir=mmlu_dir,
        num_fewshot=1,
        subjects=SUBJECTS,
        limit=10,
        batch_size=4,
        return_lm_eval_results=True,
    )
    assert tiny_model.training  # its mode is restored
    assert ours["num_questions"] == 20
    samples = [s for task in ours["lm_eval"]["samples"].values() for s in task]
    assert len(samples) == 20
    assert ours["average_acc"] == pytest.approx(sum(s["acc"] for s in samples) / len(samples))
    assert ours["average_acc"] == pytest.approx(ours["lm_eval"]["groups"]["hf_unlearn_mmlu"]["acc,none"])

    # The independent definition: lm-eval's own subject YAMLs, with only the data source replaced.
    write_mmlu_tasks(mmlu_dir, tmp_path / "ours", SUBJECTS)  # only to get the per-subject data files
    task_dir = tmp_path / "theirs"
    task_dir.mkdir()
    for subject in SUBJECTS:
        config = yaml.safe_load((LM_EVAL_MMLU / f"mmlu_{subject}.yaml").read_text())
        config["include"] = str(LM_EVAL_MMLU / "_default_template_yaml")
        config["dataset_path"] = "json"
        config["dataset_name"] = None
        data = tmp_path / "ours" / "data" / subject
        config["dataset_kwargs"] = {
            "data_files": {"test": str(data / "test.jsonl"), "dev": str(data / "dev.jsonl")},
            "cache_dir": str(tmp_path / "datasets_cache"),
        }
        (task_dir / f"mmlu_{subject}.yaml").write_text(yaml.safe_dump(config))
    theirs = run_lm_eval(
        tiny_model,
        tokenizer,
        [f"mmlu_{s}" for s in SUBJECTS],
        TaskManager(include_path=str(task_dir), include_defaults=False),
        num_fewshot=1,
        limit=10,
        batch_size=4,
        log_samples=True,
    )
    for subject in SUBJECTS:
        assert ours["subject_acc"][subject] == theirs["results"][f"mmlu_{subject}"]["acc,none"]
        ours_samples = ours["lm_eval"]["samples"][f"mmlu_{subject}"]
        theirs_samples = theirs["samples"][f"mmlu_{subject}"]
        assert [s["arguments"] for s in ours_samples] == [s["arguments"] for s in theirs_samples]
        for a, b in zip(ours_samples, theirs_samples):
            assert [r[0] for r in a["filtered_resps"]] == pytest.approx([r[0] for r in b["filtered_resps"]], abs=1e-4)


def test_lm_eval_noise_is_held_back_and_the_low_mmlu_warning_comes_once(tiny_model, tokenizer, mmlu_dir, lume_rows,
                                                                         capfd, caplog):
    lm_logger = logging.getLogger("lm_eval")
    before = (lm_logger.level, list(lm_logger.handlers), lm_logger.propagate, datasets.is_progress_bar_enabled(),
              lm_eval.api.task.tqdm)
    rows = {split: [r for r in lume_rows[f"{split}_validation"] if r["task"] == "Task2"][:2]
            for split in ("forget", "retain")}
    with caplog.at_level(logging.INFO):
        results = evaluate_model(tiny_model, tokenizer, forget_rows=rows["forget"], retain_rows=rows["retain"],
                                 mmlu={"data_dir": mmlu_dir, "subjects": SUBJECTS, "limit": 3, "num_fewshot": 1},
                                 max_new_tokens=4)
    assert results["mmlu_average"] < MMLU_THRESHOLD  # a fresh tiny model: the threshold warning is due
    printed = "".join(capfd.readouterr()) + caplog.text  # progress bars go to the terminal, log records to caplog
    assert "Overwriting default num_fewshot" not in printed  # lm-eval, once per subject
    assert "Generating test split" not in printed and "Generating dev split" not in printed  # datasets' bars
    assert "already-initialized model" not in printed
    assert printed.count("is below 0.371") == 1
    assert "lm-eval: 2 subjects, 1-shot, 6 questions" in caplog.text  # the one line that sums lm-eval's run up
    # lm-eval's logger, datasets' bars and lm-eval's prompt-building bar are as they were
    assert (lm_logger.level, list(lm_logger.handlers), lm_logger.propagate, datasets.is_progress_bar_enabled(),
            lm_eval.api.task.tqdm) == before
