"""`hf-unlearn audit` end to end: a tiny model that memorised real LUME rows, an unlearning adapter trained on it,
every probe, the MIA attack; the files it writes, their stable keys, and no forget-set text in any of them."""

from __future__ import annotations

import json

from datasets import Dataset

from hf_unlearn import UnlearningTrainer
from hf_unlearn.cli import main as cli_main

from .test_trainer import lora, make_config

KEYS = {"forget/regurgitation", "forget/knowledge", "forget/exact_memorization", "forget/extraction_strength",
        "retain/regurgitation", "retain/knowledge", "retain/exact_memorization", "retain/extraction_strength",
        "task_score", "mia/auc"}


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
        assert probe["kind"] == "attack" and set(probe["attacked"]) == KEYS and probe["verdict"].startswith(name)
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
    printed = capsys.readouterr().out
    written = markdown + (out / "audit.json").read_text()
    for row in forget:  # what a user is erasing appears in none of it
        for field in ("input", "output", "id"):
            assert row[field].strip() not in written and row[field].strip() not in printed, field
