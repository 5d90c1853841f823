"""The chunked sequential schedule (AILS-NTUA's data chunking), several retain rows per forget row, layer focus and
the `sugd` preset, through the real trainer on tiny models."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from hf_unlearn import UnlearningConfig, UnlearningTrainer
from hf_unlearn.config import PRESETS, sugd_lora_config
from hf_unlearn.data import ChunkedForgetRetainSampler, ForgetRetainSampler
from hf_unlearn.methods import StepCounts

from .conftest import short_rows
from .test_trainer import forget_nll, lora, make_config


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=8), short_rows(lume_rows["retain_train"], n=5)


def test_chunks_in_order_each_for_its_epochs_with_the_retain_position_carried_over():
    sampler = ChunkedForgetRetainSampler(num_forget=7, num_retain=5, chunk_size=3, retain_per_forget=2,
                                         epochs_per_chunk=2, seed=1)
    items = list(sampler)
    assert len(items) == len(sampler) == 14 and sampler.chunk_lengths() == [6, 6, 2]
    # chunk 0 = forget rows 0..2 twice, then chunk 1 = 3..5 twice, then chunk 2 = row 6 twice: one after another
    assert [sorted(f for f, _ in items[a:b]) for a, b in ((0, 3), (3, 6), (6, 9), (9, 12), (12, 13), (13, 14))] == [
        [0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5], [6], [6]]
    # chunk k's retain rows: the next 2 * len(chunk) rows of the cycle 0, 1, 2, 3, 4, 0, 1, ... (carried over)
    cycle = [i % 5 for i in range(14)]
    for (a, b), block in (((0, 3), cycle[0:6]), ((3, 6), cycle[0:6]), ((6, 9), cycle[6:12]), ((12, 13), cycle[12:14])):
        assert Counter(i for _, pair in items[a:b] for i in pair) == Counter(block)
    assert list(sampler) == items  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != items  # a second pass of the whole schedule reshuffles within the chunks
    unshuffled = ChunkedForgetRetainSampler(4, 0, chunk_size=2, epochs_per_chunk=2, shuffle=False)
    assert list(unshuffled) == [(0, -1), (1, -1), (0, -1), (1, -1), (2, -1), (3, -1), (2, -1), (3, -1)]


def test_several_retain_rows_per_forget_row_continue_the_retain_stream():
    one = ForgetRetainSampler(num_forget=4, num_retain=3, seed=2)
    two = ForgetRetainSampler(num_forget=4, num_retain=3, seed=2, retain_per_forget=2)
    stream = one.retain_indices(0) + one.retain_indices(1)  # 8 positions of the same cycle-wise permuted stream
    assert two.retain_indices(0) == [tuple(stream[i : i + 2]) for i in range(0, 8, 2)]
    assert [f for f, _ in two] == [f for f, _ in one]


def test_a_step_holds_retain_per_forget_times_as_many_retain_rows(tiny_model, tokenizer, rows, tmp_path):
    seen = []

    class Spy(UnlearningTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append((num_items_in_batch, inputs["retain_input_ids"].shape[0]))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    forget, retain = rows
    config = make_config(tmp_path, method="gd", per_device_train_batch_size=2, retain_per_forget=3, max_steps=2)
    Spy(model=lora(tiny_model), args=config, forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain), processing_class=tokenizer).train()
    counts, retain_rows = seen[0]
    assert isinstance(counts, StepCounts) and retain_rows == 6
    assert (counts.forget_rows.item(), counts.retain_rows.item()) == (2, 6)


def chunked_trainer(model, tokenizer, rows, tmp_path, **kwargs):
    forget, retain = rows
    settings = dict(method="gd", per_device_train_batch_size=2, forget_chunk_size=4, retain_per_forget=2,
                    epochs_per_chunk=2, num_train_epochs=1, learning_rate=1e-3, max_steps=-1)
    config = make_config(tmp_path, **{**settings, **kwargs})
    return UnlearningTrainer(model=lora(model, nonzero=False), args=config, forget_dataset=Dataset.from_list(forget),
                             retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)


@pytest.mark.parametrize("restart", [True, False])
def test_each_chunk_restarts_the_optimizer_and_the_schedule(restart, tiny_model, tokenizer, rows, tmp_path):
    trainer = chunked_trainer(tiny_model, tokenizer, rows, tmp_path, chunk_restart_optimizer=restart)
    assert trainer.chunk_bounds == [0, 4, 8]  # 2 chunks of 4 rows x 2 epochs, 2 rows a step: 4 steps each
    trainer.train()
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
    if restart:
        assert rates[:4] == rates[4:] and rates[0] > rates[3]  # the linear decay runs again over chunk 2
        assert steps == {4} and trainer.chunk_restarts == 1  # Adam's state holds chunk 2's 4 steps only
    else:
        assert all(a > b for a, b in zip(rates, rates[1:])) and steps == {8} and trainer.chunk_restarts == 0


def test_resume_inside_and_at_the_start_of_a_chunk_is_exact(memorised_model, tokenizer, rows, tmp_path):
    def run(output_dir, resume=None):
        trainer = chunked_trainer(copy.deepcopy(memorised_model), tokenizer, rows, tmp_path,
                                  output_dir=str(output_dir), save_strategy="steps", save_steps=1)
        trainer.train(resume_from_checkpoint=resume)
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}, trainer

    full, _ = run(tmp_path / "full")
    for step in (4, 5):  # the first step of chunk 2 (the restart happens after the resume), and one inside it
        resumed, trainer = run(tmp_path / f"resumed{step}", resume=str(tmp_path / "full" / f"checkpoint-{step}"))
        assert trainer.state.global_step == 8
        for name in full:
            torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6)


def test_chunks_that_split_a_step_are_refused(tiny_model, tokenizer, rows, tmp_path):
    with pytest.raises(ValueError, match=r"Chunk 0 yields 3 forget rows .* not a multiple of the 2 rows of one"):
        chunked_trainer(tiny_model, tokenizer, rows, tmp_path, forget_chunk_size=3, epochs_per_chunk=1)
    with pytest.raises(ValueError, match="epochs_per_chunk only applies with forget_chunk_size"):
        make_config(tmp_path, epochs_per_chunk=2)


def test_layer_focus_with_lora_adapts_the_last_layers_only(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    trainer = UnlearningTrainer(model=tiny_model, args=make_config(tmp_path, method="gd", train_last_layers=2),
                                forget_dataset=Dataset.from_list(forget), retain_dataset=Dataset.from_list(retain),
                                processing_class=tokenizer, peft_config=LoraConfig(r=4, target_modules="all-linear"))
    layers = {n.split(".layers.")[1].split(".")[0] for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert layers == {"2", "3"}  # of the tiny model's 4


def test_layer_focus_without_lora_moves_the_last_layers_only(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    config = make_config(tmp_path, method="gd", train_last_layers=1, max_steps=2, learning_rate=1e-3)
    UnlearningTrainer(model=tiny_model, args=config, forget_dataset=Dataset.from_list(forget),
                      retain_dataset=Dataset.from_list(retain), processing_class=tokenizer).train()
    moved = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".layers.3." in n for n in moved)
    assert any(".layers.3.mlp" in n for n in moved) and "lm_head.weight" not in moved


def test_sugd_preset_is_the_papers_configuration(tmp_path):
    config = UnlearningConfig.from_preset("sugd", output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert (config.method, config.forget_chunk_size, config.retain_per_forget, config.epochs_per_chunk) == (
        "gd", 32, 7, 7)
    assert (config.learning_rate, config.per_device_train_batch_size, config.train_last_layers) == (1e-5, 1, 8)
    assert config.retain_nll_weight == 0.5 * 7 and config.chunk_restart_optimizer  # lambda * r: ours (see PRESETS)
    lora_preset = PRESETS["sugd-lora"]
    assert (lora_preset["retain_per_forget"], lora_preset["epochs_per_chunk"], lora_preset["learning_rate"]) == (
        3, 4, 5e-5)
    assert sugd_lora_config().r == 16 and set(sugd_lora_config().target_modules) == {"q_proj", "v_proj", "up_proj",
                                                                                      "down_proj"}
    with pytest.raises(ValueError, match="Unknown preset 'sgd'. Choose one of: sugd, sugd-lora"):
        UnlearningConfig.from_preset("sgd", output_dir=str(tmp_path))


def test_sugd_recipe_unlearns_a_memorised_model(memorised_model, memorised_rows, tokenizer, tmp_path):
    # The preset's schedule and layer focus on the tiny model, full weights; its lr and sizes fit a 7B model, not it.
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    before = forget_nll(memorised_model, tokenizer, forget)
    config = UnlearningConfig.from_preset(
        "sugd", output_dir=str(tmp_path / "out"), report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True, logging_steps=1, forget_chunk_size=4, retain_per_forget=2, epochs_per_chunk=4,
        train_last_layers=2, per_device_train_batch_size=2, learning_rate=2e-3,
    )
    trainer = UnlearningTrainer(model=memorised_model, args=config, forget_dataset=Dataset.from_list(forget),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 16 and trainer.chunk_restarts == 1
    after = forget_nll(memorised_model, tokenizer, forget)
    assert before < 0.5 and after > before + 1.0, (before, after)
    assert forget_nll(memorised_model, tokenizer, retain) < 0.5  # the retain rows are kept (measured: 0.03 -> 0.1)
