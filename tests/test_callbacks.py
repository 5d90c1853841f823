"""LUME callbacks during training, `plot_history`, and `hf-unlearn evaluate` on real LUME, MIA and MMLU files."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from transformers import TrainerCallback

from hf_unlearn import UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback, plot_history
from hf_unlearn.cli import main as cli_main
from hf_unlearn.evaluation import evaluate_model, flatten_scores

from .conftest import SHARED_DATA, read_jsonl
from .test_trainer import lora, make_config


@pytest.fixture(scope="module")
def mia_docs(lume_dir):
    members = [r["document"] for r in read_jsonl(lume_dir / "mia" / "member.jsonl")[:4]]
    nonmembers = [r["document"] for r in read_jsonl(lume_dir / "mia" / "nonmember.jsonl")[:4]]
    return members, nonmembers


class Recorder(TrainerCallback):
    """What a report_to logger (TensorBoard, W&B) is handed: every log, as it comes."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_callback_logs_scores_that_fall_on_forget_and_equal_a_direct_call(
    memorised_model, memorised_rows, tokenizer, mia_docs, tmp_path, capsys
):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    model = lora(memorised_model, nonzero=False)
    config = make_config(
        tmp_path, method="npo", retain_nll_weight=3.0, max_steps=24, learning_rate=3e-3, logging_steps=8
    )
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    callback = LumeEvaluationCallback(
        trainer,
        forget_rows=forget,
        retain_rows=retain,
        mia_members=mia_docs[0],
        mia_nonmembers=mia_docs[1],
        every=12,
        unit="step",
        max_new_tokens=48,
        batch_size=8,
    )
    trainer.add_callback(callback)
    recorder = Recorder()
    trainer.add_callback(recorder)
    was_training = model.training
    trainer.train()
    assert model.training == was_training or not model.training  # the callback restored what it found

    scored = [entry for entry in trainer.state.log_history if "lume/task_score" in entry]
    assert [entry["step"] for entry in scored] == [0, 12, 24]
    before, after = scored[0], scored[-1]
    assert before["lume/forget/regurgitation"] > 0.8  # memorised
    assert after["lume/forget/regurgitation"] < before["lume/forget/regurgitation"] - 0.3
    forget_drop = before["lume/forget/regurgitation"] - after["lume/forget/regurgitation"]
    retain_drop = before["lume/retain/regurgitation"] - after["lume/retain/regurgitation"]
    assert retain_drop < forget_drop  # selective, if imperfectly, at this size
    assert {"mia/auc", "mia/score", "mia/zlib_auc", "mia/min_k_auc", "mia/min_k_plus_plus_auc"} <= set(after)
    assert "lume/forget/Task2/regurgitation" in after and "lume/retain/Task2/knowledge" in after
    assert "loss" in trainer.state.log_history[0] or any("loss" in e for e in trainer.state.log_history)

    direct = flatten_scores(
        evaluate_model(
            model,
            tokenizer,
            forget_rows=forget,
            retain_rows=retain,
            mia_members=mia_docs[0],
            mia_nonmembers=mia_docs[1],
            max_new_tokens=48,
            batch_size=8,
        )
    )
    for key, value in direct.items():
        assert after[key] == pytest.approx(value, abs=1e-9), key

    # each scoring prints as a small table, not as the trainer's one-line dict of 22 scores; the logs themselves are
    # unchanged for log_history and the loggers
    printed = capsys.readouterr().out
    assert printed.count("scores at epoch") == 3 and "(step 12)" in printed
    assert "forget regurgitation" in printed and "MIA attack AUCs (0.5 is best): loss" in printed
    assert "'lume/task_score'" not in printed and "'loss'" in printed  # other logs print as before
    assert [log for log in recorder.logs if "lume/task_score" in log] == [
        {k: v for k, v in entry.items() if k != "step"} for entry in scored
    ]

    path = tmp_path / "scores.png"
    plot_history(trainer.state.log_history, str(path), x="step")
    assert path.stat().st_size > 1000


def history(mia_score: float, mia_auc: float) -> list[dict]:
    points = [(0, 0.9, 0.9), (1, 0.4, 0.85), (2, 0.2, 0.8)]
    return [{"epoch": e, "step": 5 * e, "lume/forget/regurgitation": f, "lume/retain/regurgitation": r,
             "lume/task_score": r - f, "mia/score": mia_score, "mia/auc": mia_auc} for e, f, r in points]


def test_plot_labels_say_what_each_line_is_and_which_way_is_better(tmp_path):
    fig = plot_history(history(0.0, 1.0), str(tmp_path / "a.png"))
    panels = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes}
    assert panels == {
        "forget set: lower is better": ["forget regurgitation (ROUGE-L)"],
        "retain set and overall: higher is better": ["task score", "retain regurgitation (ROUGE-L)", "MIA score"],
    }
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(notes) == 1 and notes[0].startswith("MIA score 0 throughout: the loss attack still tells forget "
                                                   "documents from unseen ones")
    # a MIA score that moves needs no note; one held at 0 by an AUC of 0 gets the other explanation
    assert not [t for ax in plot_history(history(0.4, 0.7), str(tmp_path / "b.png")).axes for t in ax.texts]
    flat_low = plot_history(history(0.0, 0.0), str(tmp_path / "c.png"))
    assert "higher loss than unseen ones" in [t.get_text() for ax in flat_low.axes for t in ax.texts][0]


class StepCallback(LumeEvaluationCallback):
    """A subclass scoring its own way through the `score` hook: the step it scored at, and a norm of the weights."""

    def score(self):
        norm = sum(p.detach().float().norm().item() for p in self.trainer.model.parameters() if p.requires_grad)
        return {"custom/step": float(self.trainer.state.global_step), "custom/lora_norm": norm}


def test_score_hook_logs_a_subclass_scores_on_the_callback_schedule(tiny_model, tokenizer, memorised_rows, tmp_path):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    config = make_config(tmp_path, method="npo", max_steps=5, learning_rate=3e-3, logging_steps=1)
    trainer = UnlearningTrainer(model=lora(tiny_model, nonzero=False), args=config,
                                forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
                                processing_class=tokenizer)
    callback = StepCallback(trainer, mia_members=["a b c"], mia_nonmembers=["d e f"], every=2, unit="step")
    trainer.add_callback(callback)
    trainer.train()
    scored = [e for e in trainer.state.log_history if "custom/step" in e]
    # before the first step, every 2 steps, and the final step that fell between scheduled points
    assert [(e["step"], e["custom/step"]) for e in scored] == [(0, 0.0), (2, 2.0), (4, 4.0), (5, 5.0)]
    assert scored[0]["custom/lora_norm"] != scored[-1]["custom/lora_norm"]  # scored the model as it trained
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 5  # the step losses still logged
    assert callback.last_duration >= 0 and callback.last_results is None


def test_callback_refuses_incomplete_parts(tiny_model, tokenizer, memorised_rows, tmp_path):
    with pytest.raises(ValueError, match="Give both forget_rows and retain_rows"):
        LumeEvaluationCallback(None, forget_rows=memorised_rows["forget"])
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        LumeEvaluationCallback(None)


def test_cli_evaluate_writes_the_task_layout(memorised_model, tokenizer, lume_rows, lume_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    memorised_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "lume"
    data.mkdir()
    for split in ("forget_validation", "retain_validation"):
        rows = [r for r in lume_rows[split] if r["task"] == "Task2"][:6]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mia = tmp_path / "mia"
    mia.mkdir()
    for name in ("member", "nonmember"):
        rows = read_jsonl(lume_dir / "mia" / f"{name}.jsonl")[:4]
        (mia / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    code = cli_main(
        [
            "evaluate",
            "--model", str(model_dir),
            "--data", str(data),
            "--split", "validation",
            "--mia", str(mia),
            "--mmlu", str(SHARED_DATA / "mmlu"),
            "--mmlu-subjects", "anatomy",
            "--mmlu-limit", "4",
            "--mmlu-fewshot", "0",
            "--max-new-tokens", "24",
            "--output-dir", str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "evaluation_results.jsonl").read_text())
    for key in (
        "forget-set",
        "retain-set",
        "harmonic-mean-task-aggregate",
        "mia_loss_acc",
        "mia_final_score",
        "mmlu_average",
        "aggregate-score",
    ):
        assert key in results, key
    assert "regurgitation-score" in results["forget-set"]["Task2"]
    assert results["aggregate-score"] == pytest.approx(
        (results["harmonic-mean-task-aggregate"] + results["mia_final_score"] + results["mmlu_average"]) / 3
    )
    assert not (out / "generations.jsonl").exists()  # forget-set text only on request
    printed = capsys.readouterr().out
    assert "final score" in printed and "forget" in printed

    cli_main(["evaluate", "--model", str(model_dir), "--data", str(data), "--max-new-tokens", "8",
              "--output-dir", str(out), "--save-generations"])
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert (out / "generations.jsonl").stat().st_mode & 0o777 == 0o600  # forget-set text: owner only
    assert len(generations) == 12
    assert set(generations[0]) == {"split", "id", "task", "input", "expected_output", "model_output"}

    # a chosen subset: the rows named in an ids file, then at most --max-rows of each set
    chosen = [generations[0]["id"], generations[-1]["id"]]
    (tmp_path / "ids.txt").write_text("\n".join(chosen) + "\n")
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", str(data), "--max-new-tokens", "8",
                     "--output-dir", str(out), "--save-generations", "--ids", str(tmp_path / "ids.txt")]) == 0
    subset = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted(g["id"] for g in subset) == sorted(chosen) and {g["split"] for g in subset} == {"forget", "retain"}
    (tmp_path / "ids.txt").write_text("\n".join(chosen + ["no-such-id"]) + "\n")
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", str(data), "--output-dir", str(out),
                     "--ids", str(tmp_path / "ids.txt")]) == 2
    assert "the id on line(s) 3 matches no row" in capsys.readouterr().err
