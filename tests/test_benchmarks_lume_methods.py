"""benchmarks/lume_methods.py: the data selection, the utility term, and the quick comparison end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lume_methods", REPO_ROOT / "benchmarks" / "lume_methods.py")
lume_methods = importlib.util.module_from_spec(_spec)
sys.modules["lume_methods"] = lume_methods  # dataclasses look their module up there
_spec.loader.exec_module(lume_methods)
read_jsonl = lume_methods.read_jsonl


def test_subset_members_are_forget_documents_and_splits_do_not_share_documents(lume_dir):
    subset = lume_methods.select_subset(lume_dir, docs_per_task=2, num_members=3, num_utility_documents=5)
    stems = {split: {lume_methods.document_stem(r["id"]) for r in rows} for split, rows in subset.rows.items()}
    for split, rows in subset.rows.items():
        tasks = [r["task"] for r in rows]
        assert set(tasks) == {"Task1", "Task2", "Task3"}
        expected = {t: 3 if (split, t) == ("forget_train", "Task3") else 2 for t in lume_methods.TASKS}
        for task, n in expected.items():
            assert len({lume_methods.document_stem(r["id"]) for r in rows if r["task"] == task}) == n
    # the validation documents are other documents than the train documents
    train = stems["forget_train"] | stems["retain_train"]
    validation = stems["forget_validation"] | stems["retain_validation"]
    assert not train & validation
    # every scored member is a whole forget_train Task3 document of the subset: its sentence-completion row's text
    by_id = {r["id"]: r for r in subset.rows["forget_train"]}
    member_rows = {r["id"]: r["document"] for r in read_jsonl(lume_dir / "mia" / "member.jsonl")}
    task3 = [s for s in stems["forget_train"] if by_id.get(s + "sc1", {}).get("task") == "Task3"]
    assert sorted(subset.members) == sorted(member_rows[s] for s in task3) and len(subset.members) == 3
    for stem in task3:
        sc = by_id[stem + "sc1"]
        assert member_rows[stem].replace(" ", "") == (sc["input"] + sc["output"]).replace(" ", "")
    # as many nonmembers, and the utility documents are other nonmembers
    assert len(subset.nonmembers) == 3 and len(subset.utility_documents) == 5
    assert not set(subset.nonmembers) & set(subset.utility_documents)
    assert not set(subset.utility_documents) & set(member_rows.values())


def test_utility_score_and_settings_overrides():
    assert lume_methods.utility_score(100.0, 50.0) == 1.0
    assert lume_methods.utility_score(100.0, 200.0) == pytest.approx(0.5)
    args = lume_methods.build_parser().parse_args(["--quick", "--seeds", "3", "4", "--methods", "ga", "--epochs", "5"])
    assert args.quick and args.seeds == [3, 4] and args.methods == ["ga"] and args.epochs == 5
    assert args.learning_rate is None  # not given: the chosen configuration's value is kept
    full, quick = lume_methods.Settings(), lume_methods.quick_settings()
    assert len(full.seeds) >= 3 and set(full.methods) == set(lume_methods.METHODS)
    assert set(quick.methods) <= set(lume_methods.METHODS)
    assert lume_methods.target_cache_dir(full) != lume_methods.target_cache_dir(quick)


def test_method_loras_and_the_chunked_schedule_fit_the_comparison():
    full = lume_methods.Settings()
    rmu = lume_methods.lora_config("rmu", full)
    assert set(rmu.target_modules) == {"down_proj"} and rmu.layers_to_transform == [0, 1, 2]
    assert lume_methods.METHODS["rmu"]["config"]["rmu_layer"] < full.num_hidden_layers
    sugd = lume_methods.lora_config("sugd", full)
    assert set(sugd.target_modules) == {"q_proj", "v_proj", "up_proj", "down_proj"}
    for key in ("ga", "rmu", "sugd"):  # the comparison's rank and alpha for every adapter
        lora = lume_methods.lora_config(key, full)
        assert (lora.r, lora.lora_alpha) == (full.lora_r, full.lora_alpha)
    # SUGD: the preset's schedule with >1 chunk of the 36 forget rows, each chunk filling whole steps, and as many
    # passes over each forget row as the other methods' epochs
    config = lume_methods.method_config("sugd")
    assert config["method"] == "gd" and config["chunk_restart_optimizer"]
    assert not set(lume_methods.COMMON_FIELDS) & set(config)
    chunk, passes = config["forget_chunk_size"], config["epochs_per_chunk"]
    assert 36 > chunk and 36 % chunk == 0 and (chunk * passes) % full.batch_size == 0
    assert lume_methods.trainer_epochs("sugd", full) * lume_methods.passes_per_epoch("sugd") == full.epochs
    assert lume_methods.trainer_epochs("ga", full) == full.epochs and lume_methods.passes_per_epoch("ga") == 1
    assert lume_methods.describe_lora_targets(rmu) == "down_proj of decoder layers 0-2"
    assert lume_methods.describe_lora_targets(lume_methods.lora_config("ga", full)) == "all linear layers"


@pytest.mark.slow
def test_quick_comparison_writes_a_complete_table(tmp_path, monkeypatch, lume_dir):
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    result = lume_methods.main(["--quick", "--data", str(lume_dir), "--output-dir", str(out)])
    settings = result["settings"]
    md = (out / "lume_methods_quick.md").read_text()
    data = json.loads((out / "lume_methods_quick.json").read_text())
    assert (out / "lume_methods_quick.png").stat().st_size > 5000

    # the table has every method run, with mean +- std over the seeds
    for key in settings.methods:
        assert f"| {lume_methods.METHODS[key]['label']} |" in md
    assert "target (before)" in md and "±" in md and "## Reading" in md
    assert len(data["runs"]) == len(settings.methods) * len(settings.seeds)

    # every run was scored before the first step and after every (Trainer) epoch; every number is finite and in range
    for run in data["runs"]:
        epochs = lume_methods.trainer_epochs(run["method"], settings)
        assert [round(p["epoch"]) for p in run["history"]] == list(range(epochs + 1))
        passes = lume_methods.passes_per_epoch(run["method"])
        assert [p["forget_passes"] for p in run["history"]] == [e * passes for e in range(epochs + 1)]
        assert run["history"][0] == pytest.approx({**data["before"], "epoch": 0, "step": 0, "forget_passes": 0})
        for point in run["history"]:
            for key in ("final/train", "final/validation", "train/task_score", "validation/task_score",
                        "mia/score", "mia/auc", "utility/score", "train/forget/regurgitation",
                        "validation/retain/knowledge"):
                assert 0.0 <= point[key] <= 1.0, key
            assert math.isfinite(point["utility/ppl"]) and point["utility/ppl"] > 1
            assert point["final/train"] == pytest.approx(
                (point["train/task_score"] + point["mia/score"] + point["utility/score"]) / 3)
    libu = [run for run in data["runs"] if run["method"] == "libu"]
    assert all(any("influence/update_norm" in e for e in run["train_log"]) for run in libu)

    # numbers only: no forget-set text in the files
    forget = [r["output"] for r in read_jsonl(lume_dir / "forget_train.jsonl")] + [
        r["input"] for r in read_jsonl(lume_dir / "forget_train.jsonl")]
    text = md + (out / "lume_methods_quick.json").read_text()
    assert not [s for s in forget if len(s) > 20 and s in text]

    # the report can be written again from the JSON alone, with the recorded timings
    rewritten = lume_methods.main(["--from-json", str(out / "lume_methods_quick.json"), "--output-dir",
                                   str(tmp_path / "again")])
    assert rewritten["timings"] == data["timings"]
    again_md = (tmp_path / "again" / "lume_methods_quick.md").read_text()
    assert "written again from its JSON" in again_md
    assert again_md.split("## What was run")[1] == md.split("## What was run")[1]

    # a second invocation reuses the cached target model and (with --resume) the finished runs
    assert "rmu" in settings.methods
    again = lume_methods.main(["--quick", "--data", str(lume_dir), "--output-dir", str(out), "--resume",
                               "--methods", "rmu"])
    assert again["timings"]["reused_runs"] == len(settings.seeds)
    assert "cached" in (out / "lume_methods_quick.md").read_text()

    # --merge takes the runs of a results JSON and runs only what it lacks (none here): its report is the same runs
    merged = lume_methods.main(["--quick", "--data", str(lume_dir), "--output-dir", str(tmp_path / "merged"),
                                "--merge", str(tmp_path / "again" / "lume_methods_quick.json")])
    assert merged["timings"]["merged_runs"] == len(data["runs"]) and merged["runs"] == data["runs"]
    assert "`--merge`" in (tmp_path / "merged" / "lume_methods_quick.md").read_text()
    # ... and refuses a JSON of other settings
    other = json.loads((tmp_path / "again" / "lume_methods_quick.json").read_text())
    other["settings"]["learning_rate"] *= 2
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="learning_rate"):
        lume_methods.main(["--quick", "--data", str(lume_dir), "--output-dir", str(tmp_path / "merged"),
                           "--merge", str(tmp_path / "other.json")])
