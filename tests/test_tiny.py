"""hf_unlearn.support.tiny.memorise: grouping by length, the stopping loss and the KL anchor to the base model."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from hf_unlearn.losses import kl_per_token
from hf_unlearn.support.tiny import _encode, memorise, pad_rows, tiny_causal_lm

from .conftest import short_rows


def anchor_kl(model, tokenizer, texts) -> float:
    """Token-mean KL(model || model with its adapter disabled) on `texts`."""
    ids, mask, labels = pad_rows([_encode(tokenizer, t, 128) for t in texts], tokenizer.pad_token_id)
    with torch.no_grad():
        with model.disable_adapter():
            ref = model(input_ids=ids, attention_mask=mask).logits
        kl = kl_per_token(model(input_ids=ids, attention_mask=mask).logits, ref, labels)
    return float(kl.sum() / labels[:, 1:].ne(-100).sum())


def test_anchor_keeps_the_model_on_general_text_while_it_memorises(tokenizer, lume_rows):
    rows = short_rows(lume_rows["forget_train"], n=8)
    general = [r["input"] + " " + r["output"] for r in short_rows(lume_rows["retain_train"], task="Task1", n=6)]
    # LoRA barely moves a randomly initialised model, so the "pretrained" base first learns general text in full
    base = tiny_causal_lm(tokenizer, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, seed=0)
    memorise(base, tokenizer, general + [r["input"] for r in lume_rows["retain_train"][:16]], epochs=20,
             learning_rate=3e-3, batch_size=4)
    results = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))
        losses = memorise(model, tokenizer, rows, epochs=20, learning_rate=1e-2, batch_size=4, group_by_length=True,
                          anchor=general if weight else None, anchor_weight=weight, anchor_batch_size=3)
        results[weight] = (losses, anchor_kl(model, tokenizer, general))
    (plain, plain_kl), (anchored, anchored_kl) = results[0.0], results[5.0]
    assert plain[-1] < 0.5 * plain[0] and anchored[-1] < 0.5 * anchored[0]  # both memorise
    assert anchored_kl < 0.5 * plain_kl  # but the anchored one changed far less on the general text


def test_group_by_length_batches_similar_rows_and_stop_loss_stops(tokenizer, lume_rows):
    rows = short_rows(lume_rows["forget_train"], n=8) + [r["input"] for r in lume_rows["retain_train"][:4]]
    model = tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, seed=0)
    losses = memorise(model, tokenizer, rows, epochs=50, learning_rate=1e-2, batch_size=4, group_by_length=True,
                      stop_loss=3.0)
    assert len(losses) < 50 and losses[-1] < 3.0 and all(loss >= 3.0 for loss in losses[:-1])


def test_anchor_needs_a_peft_model(tokenizer):
    model = tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ValueError, match="needs a peft model"):
        memorise(model, tokenizer, ["a b c"], epochs=1, anchor=["d e f"])


def test_progress_off_a_terminal_is_a_plain_line_an_epoch(tokenizer, capsys):
    model = tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, seed=0)
    losses = memorise(model, tokenizer, ["a b c d", "e f g h"], epochs=3, batch_size=2, progress=True)
    err = capsys.readouterr().err  # captured: not a terminal, so no bar redraws
    lines = [line for line in err.splitlines() if line.startswith("memorising: epoch")]
    assert lines == [f"memorising: epoch {i + 1}/3, mean loss {loss:.4f}" for i, loss in enumerate(losses)]
    assert "\r" not in err
