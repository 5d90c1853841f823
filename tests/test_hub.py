"""Merging an unlearning adapter into its base model: same logits, plain reload, safetensors only, a card without
forget-set text; what a push uploads (an allow-list), and its refusals (a folder not ours, a public repo). The Hub
itself cannot be reached here: a small fake stands in for the `HfApi` network calls only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from hf_unlearn import UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback
from hf_unlearn.cli import main as cli_main
from hf_unlearn.cli import open_private
from hf_unlearn.hub import (
    WEIGHT_SUFFIXES,
    check_output_folder,
    files_to_push,
    merge_and_save,
    push_merged_to_hub,
    model_card,
    read_training_record,
    save_training_record,
    scores_from_history,
)
from hf_unlearn.support.tiny import pad_rows

from .conftest import short_rows
from .test_trainer import lora, make_config


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=4), short_rows(lume_rows["retain_train"], n=4)


def batch(tokenizer, forget):
    encoded = [tokenizer(r["input"] + " " + r["output"])["input_ids"] for r in forget]
    ids, mask, _ = pad_rows(encoded, tokenizer.pad_token_id)
    return ids, mask


def logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def assert_no_forget_text(folder: Path, forget_rows):
    """No forget row's input, output or id in any text file of the folder (what a push would upload)."""
    texts = {p.name: p.read_text(errors="ignore") for p in folder.rglob("*") if p.suffix in (".md", ".json", ".txt")}
    assert "README.md" in texts
    for row in forget_rows:
        for field in ("input", "output", "id"):
            for name, text in texts.items():
                assert row[field].strip() not in text, (field, name)


def assert_safetensors_only(folder: Path):
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    assert "model.safetensors" in names or any(n.endswith(".safetensors") for n in names)
    assert not [n for n in names if n.endswith(WEIGHT_SUFFIXES)], names


def train(model, tokenizer, forget, retain, tmp_path, callback=False, **kwargs):
    config = make_config(tmp_path, max_steps=2, learning_rate=1e-2, retain_kl_weight=0.5, **kwargs)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
    if callback:
        trainer.add_callback(LumeEvaluationCallback(trainer, forget_rows=forget, retain_rows=retain, every=2,
                                                    unit="step", max_new_tokens=8, batch_size=4))
    trainer.train()
    return trainer


def test_merge_and_save_from_a_trainer(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    trainer = train(lora(tiny_model, nonzero=False), tokenizer, forget, retain, tmp_path, callback=True)
    ids, mask = batch(tokenizer, forget + retain)
    expected = logits(trainer.model, ids, mask)
    with trainer.model.disable_adapter():
        assert not torch.allclose(logits(trainer.model, ids, mask), expected, atol=1e-4)  # the adapter matters
    out = merge_and_save(trainer, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, ids, mask), expected, atol=1e-5, rtol=0)
    assert_safetensors_only(out)
    assert_no_forget_text(out, forget)
    card = (out / "README.md").read_text()
    assert "- unlearning" in card and "- npo" in card
    assert "Negative Preference Optimization" in card  # the method's paper
    for key in ("lume/task_score", "lume/forget/regurgitation"):
        assert f"| {key} |" in card
    assert '| retain_kl_weight | 0.5 |' in card and "lora_alpha=8" in card


def test_merge_drops_the_frozen_reference_adapter(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    trainer = train(lora(tiny_model, nonzero=True), tokenizer, forget, retain, tmp_path, reference="adapter_copy")
    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    ids, mask = batch(tokenizer, forget)
    expected = logits(model, ids, mask)
    with torch.no_grad():  # the frozen copy gives other outputs: merging it too would be wrong
        assert not torch.allclose(trainer.reference.logits(model, ids, mask), expected, atol=1e-4)
    out = merge_and_save(trainer, tmp_path / "merged")
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out), ids, mask), expected, atol=1e-5,
                               rtol=0)


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`'s network calls: a repo of a given visibility; records what is sent."""

    def __init__(self, private: bool):
        self.private, self.created, self.pushed = private, [], []

    def __call__(self, token=None):
        return self

    def create_repo(self, repo_id, private, exist_ok, repo_type):
        self.created.append((repo_id, private))

    def repo_info(self, repo_id, repo_type):
        return SimpleNamespace(private=self.private)

    def create_commit(self, repo_id, repo_type, operations, commit_message):
        self.pushed = sorted(op.path_in_repo for op in operations)
        return SimpleNamespace(commit_url=f"https://hub/{repo_id}/commit/1")


def fake_hub(monkeypatch, private: bool) -> FakeHub:
    import huggingface_hub

    hub = FakeHub(private)
    monkeypatch.setattr(huggingface_hub, "HfApi", hub)
    return hub


def test_cli_merge_from_a_saved_adapter(tiny_model, tokenizer, rows, tmp_path, monkeypatch):
    forget, retain = rows
    base_dir = tmp_path / "base"
    tiny_model.save_pretrained(base_dir)
    trainer = train(lora(tiny_model, nonzero=False), tokenizer, forget, retain, tmp_path, callback=True)
    adapter_dir = tmp_path / "adapter"
    trainer.save_model(adapter_dir)
    save_training_record(trainer, adapter_dir)
    ids, mask = batch(tokenizer, forget)
    expected = logits(trainer.model, ids, mask)

    assert cli_main(["merge", "--adapter", str(adapter_dir), "--output", str(tmp_path / "merged"),
                     "--base", str(base_dir)]) == 0
    out = tmp_path / "merged"
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out), ids, mask), expected, atol=1e-5,
                               rtol=0)
    assert_safetensors_only(out)
    assert_no_forget_text(out, forget)
    card = (out / "README.md").read_text()
    assert "| lume/task_score |" in card and "- unlearning" in card
    assert read_training_record(adapter_dir)["method"] == "npo"

    merge = ["merge", "--adapter", str(adapter_dir), "--base", str(base_dir), "--output"]
    assert cli_main(merge + [str(out)]) == 0  # a folder an earlier merge made may be merged into again
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    assert cli_main(merge + [str(foreign)]) == 2  # refused before anything is loaded or written
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    # The push, with the Hub's network calls faked: stray files in the folder are never uploaded.
    (out / "generations.jsonl").write_text(json.dumps({"input": forget[0]["input"]}))
    (out / "runs").mkdir()
    (out / "runs" / "events.out.tfevents.1").write_text("x")
    for visibility, flags, code in ((False, [], 2), (False, ["--public"], 0), (True, [], 0)):
        hub = fake_hub(monkeypatch, visibility)
        assert cli_main(merge + [str(out), "--push-to-hub", "me/repo", *flags]) == code
        assert hub.created == [("me/repo", not flags)]
        assert hub.pushed == ([] if code else files_to_push(out))
    assert "generations.jsonl" not in files_to_push(out) and "README.md" in files_to_push(out)


def test_scores_and_card_from_a_log_history():
    history = [
        {"lume/task_score": 0.2, "mia/auc": 0.9, "step": 0},
        {"loss": 1.0, "step": 1},
        {"lume/task_score": 0.5, "mia/auc": 0.6, "mmlu/acc": 0.4, "step": 4},
    ]
    scores = scores_from_history(history)
    assert scores["lume/task_score"] == {"first": 0.2, "final": 0.5, "step": 4}
    assert "loss" not in scores
    card = model_card({"method": "gd", "scores": scores, "base_model": "allenai/OLMo-1B-0724-hf"})
    assert "base_model: allenai/OLMo-1B-0724-hf" in card and "| mmlu/acc | 0.4000 | 0.4000 (4) |" in card
    assert "Continual Learning and Private Unlearning" in card
    json.dumps(scores)  # serialisable for unlearning_record.json


def test_a_push_uploads_the_allow_list_only(tmp_path):
    folder = tmp_path / "merged"
    (folder / "runs").mkdir(parents=True)
    model_files = ["README.md", "config.json", "generation_config.json", "merges.txt", "model-00001-of-00002.safetensors",
                   "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
                   "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    others = ["generations.jsonl", "evaluation_results.jsonl", "unlearning_record.json", ".hf_unlearn_merged",
              "optimizer.pt", "training_args.bin", "adapter_model.safetensors.bak", "notes.md",
              "model-00001-of-00003.safetensors"]  # a stray shard of another save: not in the index
    for name in model_files + others:
        (folder / name).write_text("x")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (folder / "runs" / "model.safetensors").write_text("x")  # only top-level files
    assert files_to_push(folder) == model_files
    (folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors weights or no README.md"):
        files_to_push(folder)


def test_a_public_repo_is_refused_unless_asked_for(tmp_path, monkeypatch):
    folder = tmp_path / "merged"
    folder.mkdir()
    for name in ("model.safetensors", "config.json", "README.md", "generations.jsonl"):
        (folder / name).write_text("x")
    hub = fake_hub(monkeypatch, private=False)
    with pytest.raises(PermissionError, match="me/repo is public: refusing"):
        push_merged_to_hub(folder, "me/repo")
    assert hub.pushed == []
    assert push_merged_to_hub(folder, "me/repo", private=False) == "https://hub/me/repo/commit/1"
    assert hub.pushed == ["README.md", "config.json", "model.safetensors"]
    hub = fake_hub(monkeypatch, private=None)  # visibility unknown: treated as public
    with pytest.raises(PermissionError, match="unknown visibility"):
        push_merged_to_hub(folder, "me/repo")


def test_a_merge_replaces_an_earlier_one_whole_and_the_card_names_a_local_base_by_its_folder(tiny_model, tmp_path):
    out = merge_and_save(lora(tiny_model), tmp_path / "merged", record={"base_model": str(tmp_path / "my-base")})
    (out / "pytorch_model.bin").write_text("x")  # a stray weight file in a folder an earlier merge made
    out = merge_and_save(lora(tiny_model), tmp_path / "merged", record={"base_model": str(tmp_path / "my-base")})
    assert not (out / "pytorch_model.bin").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left beside it
    card = (out / "README.md").read_text()
    assert "- Base model: `my-base (a local folder)`" in card and str(tmp_path) not in card
    assert "Base model: `HuggingFaceTB/SmolLM2-135M`" in model_card({"base_model": "HuggingFaceTB/SmolLM2-135M"})


def test_merge_refuses_a_non_empty_folder_it_did_not_make(tiny_model, tmp_path):
    check_output_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "data.jsonl").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty and was not made by merge_and_save"):
        merge_and_save(lora(tiny_model), tmp_path / "theirs")
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["data.jsonl"]


def test_generations_are_written_owner_only(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text("old")
    os.chmod(path, 0o644)
    with open_private(path) as f:
        f.write("new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    with open_private(tmp_path / "fresh.jsonl") as f:
        f.write("x")
    assert (tmp_path / "fresh.jsonl").stat().st_mode & 0o777 == 0o600


def test_mismatched_models_are_refused_in_one_line(tiny_model, tokenizer, rows, tmp_path, capsys):
    import json as json_module

    from hf_unlearn.support.tiny import tiny_causal_lm

    forget, retain = rows
    base_dir, other_dir = tmp_path / "base", tmp_path / "other"
    tiny_model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    other = tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)  # another shape
    other.save_pretrained(other_dir)
    tokenizer.save_pretrained(other_dir)
    trainer = train(lora(tiny_model, nonzero=False), tokenizer, forget, retain, tmp_path)
    adapter_dir = tmp_path / "adapter"
    trainer.save_model(adapter_dir)
    config = json_module.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (adapter_dir / "adapter_config.json").write_text(json_module.dumps(config))
    # merge onto another base than the adapter's own: different architecture, refused, nothing written
    assert cli_main(["merge", "--adapter", str(adapter_dir), "--base", str(other_dir),
                     "--output", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert "are different models (hidden_size" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "merged").exists()
    # the same adapter on a model whose recorded base is not here: its weights do not fit
    config["base_model_name_or_path"] = "someone/elsewhere"
    (adapter_dir / "adapter_config.json").write_text(json_module.dumps(config))
    assert cli_main(["merge", "--adapter", str(adapter_dir), "--base", str(other_dir),
                     "--output", str(tmp_path / "merged2")]) == 2
    assert "does not fit the model" in capsys.readouterr().err
