"""Merging an unlearning adapter into its base model: same logits, plain reload, safetensors only, a card without
forget-set text. (The push is `huggingface_hub`'s own `upload_folder` of the folder checked here; it runs only where
the Hub can be reached, so it is not exercised here.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from hf_unlearn import UnlearningTrainer
from hf_unlearn.callbacks import LumeEvaluationCallback
from hf_unlearn.cli import main as cli_main
from hf_unlearn.hub import (
    WEIGHT_SUFFIXES,
    merge_and_save,
    model_card,
    read_training_record,
    save_training_record,
    scores_from_history,
)

from .conftest import short_rows
from .test_trainer import lora, make_config


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=4), short_rows(lume_rows["retain_train"], n=4)


def batch(tokenizer, forget):
    encoded = [tokenizer(r["input"] + " " + r["output"])["input_ids"] for r in forget]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(encoded):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
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


def test_cli_merge_from_a_saved_adapter(tiny_model, tokenizer, rows, tmp_path):
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
