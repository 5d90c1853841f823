"""The embedded demo, end to end in its quick configuration: cache, table, plot, scores logged every epoch."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from hf_unlearn import cli
from hf_unlearn.support import demo
from hf_unlearn.cli import main as cli_main
from hf_unlearn.data import read_mia_documents
from hf_unlearn.data.documents import read_documents
from hf_unlearn.evaluation import flatten_scores


def test_quick_demo_end_to_end_and_cache_reuse(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    first = demo.run_demo(output_dir=str(tmp_path / "run1"), seed=0, quick=True)

    # step 1 built and cached the memorised target model (safetensors + tokenizer) under HF_UNLEARN_CACHE/demo/<hash>
    cache_dir = Path(first["paths"]["cache_dir"])
    assert cache_dir.parent == tmp_path / "cache" / "demo"
    assert not first["target"]["from_cache"]
    assert (cache_dir / "model.safetensors").is_file() and (cache_dir / "tokenizer.json").is_file()
    assert first["target"]["memorise_losses"][-1] < first["target"]["memorise_losses"][0]

    # scores before the first step and after every epoch
    epochs = demo.demo_settings(quick=True).unlearn["num_train_epochs"]
    assert [round(h["epoch"]) for h in first["history"]] == list(range(epochs + 1))
    for key in ("lume/task_score", "lume/forget/regurgitation", "lume/retain/knowledge", "mia/score"):
        assert key in first["before"] and key in first["after"]
    assert set(first["selectivity"]) == {"forget_halved", "retain_kept", "selective"}

    # the table, the results, the plot, the log history and the adapter were written, and their paths printed
    table = Path(first["paths"]["table"]).read_text()
    assert "forget regurgitation" in table and "task score" in table
    assert json.loads(Path(first["paths"]["results"]).read_text())["before"] == first["before"]
    assert Path(first["paths"]["plot"]).stat().st_size > 1000
    assert Path(first["paths"]["adapter"], "adapter_config.json").is_file()
    out = capsys.readouterr().out
    assert first["paths"]["plot"] in out and "forget regurgitation" in out
    # every scoring printed as a table (the tqdm bar's path), not as a one-line dict of every score
    assert out.count("scores at epoch") == epochs + 1 and "'lume/task_score'" not in out

    # the adapter names the cached target model as its base (a first, uncached run had none), and carries the record
    # that gives `hf-unlearn merge` the method, its settings and the scores for the model card
    adapter = Path(first["paths"]["adapter"])
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(cache_dir)
    merged = tmp_path / "merged"
    assert cli_main(["merge", "--adapter", str(adapter), "--output", str(merged)]) == 0
    card = (merged / "README.md").read_text()
    assert f"- Base model: `{Path(cache_dir).name} (a local folder)`" in card and "- Method: `anchored`" in card
    assert "Paper:" in card and str(cache_dir) not in card  # a local path says where someone's files are
    assert "| anchor_weight | 1.0 |" in card and "| retain_nll_weight | 3.0 |" in card and "| num_train_epochs | 2 |" in card
    before = first["before"]["lume/forget/regurgitation"]
    assert f"| lume/forget/regurgitation | {before:.4f} |" in card and "| mia/score |" in card
    assert "No evaluation scores were logged" not in card

    # its data is on disk (owner-only: forget text), and the printed `hf-unlearn evaluate` command gives its scores
    data = Path(first["paths"]["data"])
    assert {p.name for p in data.glob("*.jsonl")} == {"forget_train.jsonl", "retain_train.jsonl", "calibration.jsonl"}
    # the documents that steered it (for `hf-unlearn unlearn --calibration`) are none of the attack's documents
    steering = set(read_documents(data / "calibration.jsonl")[0])
    attack = read_mia_documents(data / "mia")
    assert steering and not steering & (set(attack[0]) | set(attack[1]))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in data.rglob("*.jsonl"))
    assert Path(first["paths"]["target_model"]).resolve() == cache_dir.resolve()
    command = first["paths"]["evaluate_command"]
    assert command in out
    assert cli.main(shlex.split(command)[1:]) == 0
    results = json.loads((Path(first["paths"]["output_dir"]) / "eval" / "evaluation_results.jsonl").read_text())
    scores = flatten_scores(results)
    for key in ("lume/task_score", "lume/forget/regurgitation", "lume/retain/knowledge", "mia/auc"):
        assert scores[key] == pytest.approx(first["after"][key], abs=1e-6), key

    # a second run reuses the cached model: no memorisation at all, and the same starting scores
    def no_memorising(*args, **kwargs):
        raise AssertionError("the second run memorised again instead of using the cache")

    monkeypatch.setattr("hf_unlearn.support.tiny.memorise", no_memorising)
    monkeypatch.setattr(demo, "build_target_model", no_memorising)
    second = demo.run_demo(output_dir=str(tmp_path / "run2"), seed=0, quick=True)
    assert second["target"]["from_cache"]
    assert second["paths"]["cache_dir"] == first["paths"]["cache_dir"]
    assert second["before"] == pytest.approx(first["before"])
    config = json.loads(Path(second["paths"]["adapter"], "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(cache_dir)


def test_cache_location_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_UNLEARN_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert demo.cache_root() == tmp_path / "hf" / "hf_unlearn"
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "mine"))
    quick, full = demo.demo_settings(quick=True), demo.demo_settings()
    assert demo.target_cache_dir(quick).parent == tmp_path / "mine" / "demo"
    assert demo.target_cache_dir(quick) == demo.target_cache_dir(demo.demo_settings(quick=True))
    assert demo.target_cache_dir(quick) != demo.target_cache_dir(full)
    assert demo.target_cache_dir(full) != demo.target_cache_dir(demo.demo_settings(seed=1))
    # unlearning settings do not change which target model is used
    quick.unlearn["learning_rate"] = 1.0
    assert demo.target_cache_dir(quick) == demo.target_cache_dir(demo.demo_settings(quick=True))


def test_main_parses_options(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: calls.append(kwargs) or {})
    assert demo.main(["--quick", "--seed", "3", "--output-dir", "x"]) == 0
    assert calls == [{"output_dir": "x", "seed": 3, "quick": True, "model": "tiny"}]
    assert demo.main(["--model", "smollm2"]) == 0
    assert calls[-1] == {"output_dir": None, "seed": 0, "quick": False, "model": "smollm2"}


def test_smollm2_settings_are_their_own_target():
    tiny, real = demo.demo_settings(), demo.demo_settings(model="smollm2")
    assert real.model["pretrained"] == "smollm2" and demo.target_cache_dir(real) != demo.target_cache_dir(tiny)
    assert real.unlearn["method"] == "npo" and real.eval_every == real.unlearn["num_train_epochs"]
    with pytest.raises(ValueError, match="unknown demo model 'gpt2'"):
        demo.demo_settings(model="gpt2")
