"""`hf-unlearn audit` end to end: a tiny model that memorised real LUME rows, an unlearning adapter trained on it,
every probe, the MIA attack; the files it writes, their stable keys, and no forget-set text in any of them."""

from __future__ import annotations

import json

from datasets import Dataset

from hf_unlearn import UnlearningTrainer
from hf_unlearn.cli import main as cli_main
from hf_unlearn.hub import save_training_record

from .test_trainer import lora, make_config

KEYS = {"forget/regurgitation", "forget/knowledge", "forget/exact_memorization", "forget/extraction_strength",
        "retain/regurgitation", "retain/knowledge", "retain/exact_memorization", "retain/extraction_strength",
        "task_score", "mia/auc", "mia/zlib_auc", "mia/min_k_auc", "mia/min_k_plus_plus_auc", "mia/exposed_share",
        "mia/member_loss", "mia/nonmember_loss"}


def test_audit_command_end_to_end(memorised_model, tokenizer, memorised_rows, lume_rows, tmp_path, capsys):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    original = tmp_path / "original"
    memorised_model.save_pretrained(original)
    tokenizer.save_pretrained(original)
    config = make_config(tmp_path / "run", max_steps=4, learning_rate=1e-2, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(model=lora(memorised_model, nonzero=False), args=config,
                                forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
                                processing_class=tokenizer)
    trainer.train()
    adapter = tmp_path / "adapter"
    trainer.save_model(adapter)
    save_training_record(trainer, adapter)
    data = tmp_path / "lume"
    data.mkdir()
    for name, rows in (("forget_train", forget), ("retain_train", retain)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mia = tmp_path / "mia"
    mia.mkdir()
    (mia / "member.jsonl").write_text("".join(json.dumps({"document": r["input"] + " " + r["output"]}) + "\n"
                                              for r in forget[:4]))
    (mia / "nonmember.jsonl").write_text("".join(json.dumps({"document": r["input"] + " " + r["output"]}) + "\n"
                                                 for r in lume_rows["retain_validation"][:4]))
    out = tmp_path / "audit"
    code = cli_main(["audit", "--model", str(original), "--adapter", str(adapter), "--original", str(original),
                     "--data", str(data), "--split", "train", "--mia", str(mia), "--output-dir", str(out),
                     "--relearn-steps", "2", "--relearn-lr", "1e-3", "--max-new-tokens", "64", "--batch-size", "8"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"audit.json", "audit.md", "audit.png"}
    results = json.loads((out / "audit.json").read_text())
    assert results["format"] == "hf_unlearn.audit" and results["version"] == 1
    assert results["rows"] == {"forget": len(forget), "retain": len(retain)}
    assert set(results["models"]) == {"original", "unlearned"}
    assert set(results["models"]["original"]) == KEYS
    assert list(results["probes"]) == ["int8", "int4", "relearn", "prefix50", "prefix25", "paraphrase"]
    for name in ("int8", "int4", "relearn"):
        probe = results["probes"][name]
        # an attacked model's retain rows are scored teacher-forced only (what the damage check reads)
        assert probe["kind"] == "attack" and probe["verdict"].startswith(name)
        assert set(probe["attacked"]) == KEYS - {"retain/regurgitation", "retain/knowledge", "task_score"}
    for name in ("int8", "int4"):  # the control (the original rounded the same way) only where rounding hurt retain
        probe = results["probes"][name]
        damaged = (results["models"]["unlearned"]["retain/exact_memorization"]
                   - probe["attacked"]["retain/exact_memorization"])
        assert ("original_attacked" in probe) == (damaged > 0.2)
        if "original_attacked" in probe:
            assert set(probe["original_attacked"]) == {"retain/exact_memorization", "retain/extraction_strength"}
    assert "original_attacked" not in results["probes"]["relearn"]
    relearn = results["probes"]["relearn"]
    assert 0 < relearn["rows"] < len(forget) and relearn["rows"] + relearn["rows_relearned"] == len(forget)
    for name in ("prefix50", "prefix25"):
        assert results["probes"][name]["rows"] == sum(r["id"][:-1].endswith("sc") for r in forget)
    assert results["probes"]["paraphrase"] == {"kind": "probe", "rows": 0,
                                               "verdict": "paraphrase: not run: the forget rows carry no paraphrases"}
    # the memorised original regurgitates; 8-bit rounding of it changes little
    assert results["models"]["original"]["forget/regurgitation"] > 0.8
    markdown = (out / "audit.md").read_text()
    assert "## Verdicts" in markdown and markdown.count("\n- ") >= 6
    # the verdicts go on the merged model's card
    merged = tmp_path / "merged"
    assert cli_main(["merge", "--adapter", str(adapter), "--base", str(original), "--output", str(merged),
                     "--audit", str(out / "audit.json")]) == 0
    card = (merged / "README.md").read_text()
    assert "## Audit: does the forgetting hold?" in card
    assert all(p["verdict"] in card for p in results["probes"].values())
    assert cli_main(["merge", "--adapter", str(adapter), "--base", str(original), "--output", str(tmp_path / "m2"),
                     "--audit", str(data / "forget_train.jsonl")]) == 2  # not an audit: refused, nothing written
    assert not (tmp_path / "m2").exists()
    printed = capsys.readouterr().out
    written = markdown + (out / "audit.json").read_text() + card
    for row in forget:  # what a user is erasing appears in none of it
        for field in ("input", "output", "id"):
            assert row[field].strip() not in written and row[field].strip() not in printed, field


def test_cli_errors_are_one_line_unless_debug(tmp_path, capsys):
    import pytest

    from hf_unlearn.data.lume import DataValidationError

    (tmp_path / "forget_train.jsonl").write_text(json.dumps({"id": "a1sc1", "input": "x", "output": 3}) + "\n")
    (tmp_path / "retain_train.jsonl").write_text(json.dumps({"id": "b1sc1", "input": "y", "output": "z"}) + "\n")
    argv = ["audit", "--model", "nowhere", "--original", "nowhere", "--data", str(tmp_path), "--output-dir",
            str(tmp_path / "out")]
    assert cli_main(argv) == 2  # refused while reading the data, before any model is looked for
    err = capsys.readouterr().err
    assert err.startswith("hf-unlearn audit: error: ") and "forget_train.jsonl" in err and "output" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(DataValidationError):
        cli_main(argv + ["--debug"])
    assert cli_main(["audit", "--model", "m", "--original", "m", "--data", str(tmp_path), "--output-dir", "o",
                     "--probes", "int4,int2"]) == 2
    assert "unknown probe(s) int2; known: int8, int4, relearn" in capsys.readouterr().err


def test_evaluate_warns_before_generating_about_rows_that_are_not_scored(tmp_path, capsys):
    from hf_unlearn.metrics.lume import scoring_warnings

    rows = [{"id": "d1sc1", "task": "Task2", "input": "a", "output": "b"},
            {"id": "d1sc1", "task": "Task2", "input": "a", "output": "b"},
            {"id": "custom-7", "task": "Task9", "input": "c", "output": "d"}]
    lines = scoring_warnings(rows, "forget")
    assert lines == ["forget: 1 of 3 rows are not scored (their id does not end in sc<N> or qa<N>): rows 2",
                     "forget: 1 rows repeat an earlier row's id; each copy is scored",
                     "forget: 1 rows have a task other than Task1, Task2, Task3 (1 other task name(s)); they are "
                     "scored as tasks of their own"]
    assert scoring_warnings(rows[:1], "retain") == []


def test_audit_refuses_an_original_of_another_architecture(memorised_model, tokenizer, memorised_rows, tmp_path,
                                                           capsys):
    from hf_unlearn.support.tiny import tiny_causal_lm

    model_dir, other_dir = tmp_path / "model", tmp_path / "other"
    memorised_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(other_dir)
    data = tmp_path / "lume"
    data.mkdir()
    for name, rows in (("forget_train", memorised_rows["forget"]), ("retain_train", memorised_rows["retain"])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["audit", "--model", str(model_dir), "--original", str(other_dir), "--data", str(data),
                     "--output-dir", str(tmp_path / "audit"), "--probes", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--original" in err and "are different models" in err and "Traceback" not in err
    assert not (tmp_path / "audit").exists()
