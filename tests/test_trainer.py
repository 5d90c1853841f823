"""UnlearningTrainer on tiny models built from a config and real LUME rows.

The expected losses are computed here independently: one unpadded row at a time, from the model's own logits with
the adapter on (policy) and off (reference), with the formulas of ../shared/docs/LUME.md written out again.
"""

from __future__ import annotations

import copy
import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from hf_unlearn import DataValidationError, InfluenceUnlearningConfig, UnlearningConfig, UnlearningTrainer
from hf_unlearn.support.tiny import tiny_causal_lm

from .conftest import short_rows


def lora(model, nonzero: bool = True, seed: int = 0):
    """A LoRA on every linear layer. `nonzero=True` initialises B randomly, so adapter on != adapter off at step 0."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=not nonzero)
    return get_peft_model(model, config)


def make_config(tmp_path, config_cls=UnlearningConfig, **kwargs) -> UnlearningConfig:
    """A quiet, single-process config for tests (`config_cls` may be a subclass, e.g. InfluenceUnlearningConfig)."""
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    defaults.update(kwargs)
    return config_cls(**defaults)


def answer_distributions(model, tokenizer, row) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax of the next-token distributions at the answer positions of one unpadded row, and the targets."""
    prompt = tokenizer(row["input"])["input_ids"]
    answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return F.log_softmax(logits[positions], dim=-1), torch.tensor(answer)


def expected_loss(model, tokenizer, forget, retain, config: UnlearningConfig) -> float:
    """The method's loss on a batch made of all of `forget` and all of `retain`, computed independently."""
    model.eval()
    policy_f = [answer_distributions(model, tokenizer, r) for r in forget]
    with model.disable_adapter():
        ref_f = [answer_distributions(model, tokenizer, r) for r in forget]
        ref_r = [answer_distributions(model, tokenizer, r) for r in retain]
    policy_r = [answer_distributions(model, tokenizer, r) for r in retain]

    def picked(dist, targets):
        return dist.gather(-1, targets[:, None])[:, 0]

    forget_tokens = torch.cat([picked(d, t) for d, t in policy_f])
    forget_nll = -forget_tokens.mean()
    beta = config.beta
    if config.method == "npo":
        if config.npo_level == "sequence":
            diffs = torch.stack([picked(p, t).sum() - picked(q, t).sum() for (p, t), (q, _) in zip(policy_f, ref_f)])
        else:
            diffs = torch.cat([picked(p, t) - picked(q, t) for (p, t), (q, _) in zip(policy_f, ref_f)])
        loss = (-(2 / beta) * F.logsigmoid(-beta * diffs)).mean()
    else:
        loss = -forget_nll
    if config.uses_retain_nll:
        loss = loss + config.retain_nll_weight * -torch.cat([picked(d, t) for d, t in policy_r]).mean()
    if config.uses_retain_kl:
        kl = torch.cat([(p.exp() * (p - q)).sum(-1) for (p, _), (q, _) in zip(policy_r, ref_r)])
        loss = loss + config.retain_kl_weight * kl.mean()
    return loss.item()


METHOD_CONFIGS = {
    "npo+nll+kl": dict(method="npo", retain_nll_weight=1.0, retain_kl_weight=0.5),
    "npo-token+nll+kl": dict(method="npo", npo_level="token", retain_nll_weight=2.0, retain_kl_weight=0.7),
    "npo-plain": dict(method="npo", retain_nll_weight=0.0, retain_kl_weight=0.0, beta=0.1),
    "ga": dict(method="ga"),
    "gd": dict(method="gd", retain_nll_weight=3.0),
    "kl": dict(method="kl", retain_kl_weight=1.5),
}


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=4), short_rows(lume_rows["retain_train"], n=4)


@pytest.mark.parametrize("name", list(METHOD_CONFIGS))
def test_first_step_loss_equals_independent_computation(name, tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model)
    config = make_config(tmp_path, reference="base", **METHOD_CONFIGS[name])
    expected = expected_loss(model, tokenizer, forget, retain, config)
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(expected, rel=1e-5)
    expected_keys = {"forget_nll"} | ({"npo_loss"} if config.method == "npo" else set())
    expected_keys |= {"retain_nll"} if config.uses_retain_nll else set()
    expected_keys |= {"retain_kl"} if config.uses_retain_kl else set()
    assert expected_keys <= set(logged)
    assert not ({"retain_nll", "retain_kl", "npo_loss"} - expected_keys) & set(logged)


def test_lora_trains_base_stays_bit_identical_and_reference_is_the_base(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    base = copy.deepcopy(tiny_model)
    model = lora(tiny_model, nonzero=False)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    config = make_config(tmp_path, max_steps=3, learning_rate=1e-2, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    assert trainer.reference.kind == "base"  # fresh adapter: no copy of anything
    trainer.train()
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in lora_before.items())
    assert all(torch.equal(after[n], p) for n, p in base_before.items())
    ids = torch.tensor([tokenizer(forget[0]["input"] + forget[0]["output"])["input_ids"]])
    mask = torch.ones_like(ids)
    reference = trainer.reference.logits(model, ids, mask)
    with torch.no_grad():
        assert torch.equal(reference, base(input_ids=ids, attention_mask=mask).logits)
        assert not torch.equal(model(input_ids=ids, attention_mask=mask).logits, reference)


def test_peft_config_adapter_initialisation_follows_args_seed(tokenizer, rows, tmp_path):
    """With `peft_config=` the trainer draws the LoRA weights: `args.seed` fixes them, whatever the global RNG did."""
    forget, retain = rows

    def lora_a(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(1000 + seed)  # a different global RNG state each time: the trainer must reseed
        trainer = UnlearningTrainer(
            model=tiny_causal_lm(tokenizer, arch="olmo", seed=0),
            args=make_config(tmp_path, seed=seed),
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
        )
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n}

    first, again, other = lora_a(0), lora_a(0), lora_a(1)
    assert first and all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_trained_adapter_is_copied_into_a_frozen_reference(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model, nonzero=True)  # arrives with an adapter that already changes the outputs
    ids = torch.tensor([tokenizer(forget[0]["input"] + forget[0]["output"])["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        incoming = model(input_ids=ids, attention_mask=mask).logits
    config = make_config(tmp_path, max_steps=2, learning_rate=1e-2, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    assert trainer.reference.kind == "adapter_copy"
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)
    trainer.train()
    assert model.active_adapter == "default"
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    assert torch.allclose(trainer.reference.logits(model, ids, mask), incoming, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits, incoming, atol=1e-4)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_precomputed_reference_gives_the_same_first_step_loss(level, tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    losses = []
    for precompute in (False, True):
        model = lora(copy.deepcopy(tiny_model))
        config = make_config(
            tmp_path, reference="base", npo_level=level, retain_kl_weight=0.0, precompute_ref_log_probs=precompute
        )
        trainer = UnlearningTrainer(
            model=model,
            args=config,
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )
        trainer.train()
        losses.append(trainer.state.log_history[0]["loss"])
        if precompute:
            assert all("ref_logp" in row for row in trainer.train_dataset.forget)
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize(
    "method", [dict(method="npo", retain_kl_weight=0.5), dict(method="npo", npo_level="token"), dict(method="kl")]
)
def test_gradient_accumulation_gives_the_same_update(method, tiny_model, tokenizer, lume_rows, tmp_path):
    # Rows of different lengths make the per-micro-batch token counts differ, which a wrong normalisation shows.
    forget = lume_rows["forget_train"][:2] + short_rows(lume_rows["forget_train"], n=6)
    retain = lume_rows["retain_train"][:2] + short_rows(lume_rows["retain_train"], n=6)
    if method["method"] == "kl":
        method = dict(method, retain_kl_weight=1.0)
    weights = []
    for batch, accumulation in ((4, 1), (2, 2)):
        model = lora(copy.deepcopy(tiny_model))
        config = make_config(
            tmp_path,
            reference="base",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            optim="sgd",  # the update is lr * gradient: a scaling error shows (Adam would normalise it away)
            learning_rate=0.5,
            max_grad_norm=1e9,
            lr_scheduler_type="constant",
            **method,
        )
        trainer = UnlearningTrainer(
            model=model,
            args=config,
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    initial = {n: p for n, p in lora(copy.deepcopy(tiny_model)).named_parameters() if "lora_" in n}
    moved = max((weights[0][n] - initial[n]).abs().max().item() for n in initial)
    assert moved > 1e-3  # the step is not trivially small
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-5)


def forget_nll(model, tokenizer, rows) -> float:
    """Mean over rows of the answer tokens' mean NLL."""
    nll = []
    for row in rows:
        dist, targets = answer_distributions(model, tokenizer, row)
        nll.append(-dist.gather(-1, targets[:, None]).mean())
    return torch.stack(nll).mean().item()


def test_plain_npo_raises_forget_nll_of_a_memorised_model(memorised_model, memorised_rows, tokenizer, tmp_path):
    forget = memorised_rows["forget"]
    model = lora(memorised_model, nonzero=False)
    before = forget_nll(model, tokenizer, forget)
    config = make_config(
        tmp_path, method="npo", retain_nll_weight=0.0, retain_kl_weight=0.0, max_steps=24, learning_rate=3e-3
    )
    trainer = UnlearningTrainer(
        model=model, args=config, forget_dataset=Dataset.from_list(forget), processing_class=tokenizer
    )
    trainer.train()
    after = forget_nll(model, tokenizer, forget)
    assert before < 0.5  # memorised
    assert after > before + 1.0, (before, after)
    assert trainer.state.log_history[-2]["npo_loss"] < trainer.state.log_history[0]["npo_loss"]


def test_resume_from_a_mid_run_checkpoint_ends_with_the_same_lora_weights(
    memorised_model, memorised_rows, tokenizer, tmp_path
):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"][:3]  # 3 retain rows: cycled, reshuffled

    def run(output_dir, resume=None):
        model = lora(copy.deepcopy(memorised_model), nonzero=False)
        config = make_config(
            tmp_path,
            output_dir=str(output_dir),
            per_device_train_batch_size=2,
            max_steps=10,  # 4 steps per epoch: the checkpoint at step 3 is mid-epoch
            learning_rate=1e-3,
            retain_kl_weight=0.5,
            save_strategy="steps",
            save_steps=3,
        )
        trainer = UnlearningTrainer(
            model=model,
            args=config,
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}, trainer

    full, _ = run(tmp_path / "full")
    resumed, trainer = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-3"))
    assert trainer.state.global_step == 10
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6)


def test_gradient_checkpointing_with_lora(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model, nonzero=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    config = make_config(tmp_path, max_steps=2, learning_rate=1e-2, gradient_checkpointing=True, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_bf16_mixed_precision_step(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model, nonzero=False)
    config = make_config(tmp_path, max_steps=2, bf16=True, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    trainer.train()
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)


def test_full_finetuning_with_an_explicit_ref_model(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    ref_model = copy.deepcopy(tiny_model)  # the user's own frozen copy; the trainer never copies by itself
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    config = make_config(tmp_path, max_steps=1, learning_rate=1e-3, retain_kl_weight=0.5)
    trainer = UnlearningTrainer(
        model=tiny_model,
        args=config,
        ref_model=ref_model,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )
    trainer.train()
    # at step 0 policy == reference, so NPO is (2/beta) log 2 and the KL is 0
    assert trainer.state.log_history[0]["npo_loss"] == pytest.approx(4 * math.log(2), rel=1e-5)
    assert trainer.state.log_history[0]["retain_kl"] == pytest.approx(0.0, abs=1e-7)
    assert any(not torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in ref_model.named_parameters())


# ---- errors, before any training step --------------------------------------------------------------------------


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown unlearning method 'npo2'\. Choose one of: npo, ga, gd, kl"):
        make_config(tmp_path, method="npo2")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "config_cls, name",
    [(UnlearningConfig, name) for name in ("beta", "retain_nll_weight", "retain_kl_weight", "learning_rate",
                                           "max_unlearning_time", "weight_decay")]
    + [(InfluenceUnlearningConfig, name) for name in ("damping", "influence_lr", "sophia_rho")],
)
def test_non_finite_hyperparameters_are_refused(config_cls, name, value, tmp_path):
    # A NaN weight compared False everywhere and silently dropped its term.
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number, got {value}"):
        make_config(tmp_path, config_cls, **{"method": "kl", "retain_kl_weight": 1.0, name: value})


def test_non_finite_optimizer_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unlearn_optim_args\['eps'\] must be a finite number, got nan"):
        make_config(tmp_path, unlearn_optim="sophia", unlearn_optim_args='{"eps": NaN}')


def test_contradictory_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="method='kl' with retain_kl_weight=0"):
        make_config(tmp_path, method="kl", retain_kl_weight=0.0)
    with pytest.raises(ValueError, match="precompute_ref_log_probs=True only applies to method='npo'"):
        make_config(tmp_path, method="gd", precompute_ref_log_probs=True)


def test_npo_on_a_plain_model_without_ref_model_is_refused(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    with pytest.raises(ValueError, match="needs a reference model.*not a peft model and no ref_model"):
        UnlearningTrainer(
            model=tiny_model,
            args=make_config(tmp_path),
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )


def test_adapter_reference_on_a_model_without_adapter_is_refused(tiny_model, tokenizer, rows, tmp_path):
    with pytest.raises(ValueError, match=r"reference='base' needs a peft model .* Pass `peft_config=LoraConfig"):
        UnlearningTrainer(
            model=tiny_model,
            args=make_config(tmp_path, reference="base"),
            forget_dataset=Dataset.from_list(rows[0]),
            retain_dataset=Dataset.from_list(rows[1]),
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    "forget, message",
    [
        ([], "forget_dataset is empty"),
        ([{"input": "a", "answer": "b"}], "forget_dataset has no 'output' column"),
        ([{"input": "a", "output": None}], r"forget_dataset, row 0: field 'output' is missing"),
        ([{"input": "a", "output": "b"}, {"input": "a", "output": " "}], r"forget_dataset, row 1: field 'output' is empty"),
    ],
)
def test_bad_forget_sets_are_refused(forget, message, tiny_model, tokenizer, tmp_path):
    dataset = Dataset.from_list(forget) if forget else Dataset.from_dict({"input": [], "output": []})
    with pytest.raises(DataValidationError, match=message):
        UnlearningTrainer(
            model=lora(tiny_model), args=make_config(tmp_path, method="ga"), forget_dataset=dataset, processing_class=tokenizer
        )


def test_missing_retain_set_is_refused(tiny_model, tokenizer, rows, tmp_path):
    with pytest.raises(ValueError, match="uses the retain set, but retain_dataset is None"):
        UnlearningTrainer(
            model=lora(tiny_model),
            args=make_config(tmp_path, method="gd"),
            forget_dataset=Dataset.from_list(rows[0]),
            processing_class=tokenizer,
        )


def test_precompute_with_an_iterable_forget_set_is_refused(tiny_model, tokenizer, rows, tmp_path):
    iterable = Dataset.from_list(rows[0]).to_iterable_dataset()
    assert isinstance(iterable, datasets.IterableDataset)
    with pytest.raises(ValueError, match="precompute_ref_log_probs=True needs a map-style forget_dataset"):
        UnlearningTrainer(
            model=lora(tiny_model),
            args=make_config(tmp_path, precompute_ref_log_probs=True, retain_nll_weight=0.0),
            forget_dataset=iterable,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize("has_pad", [False, True])
def test_tokenizer_without_eos_token_is_refused(has_pad, tiny_model, tokenizer, rows, tmp_path):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token if has_pad else None  # the pad token stays when EOS goes
    tok.eos_token = None
    assert tok.eos_token_id is None
    with pytest.raises(ValueError, match=r"The tokenizer has no EOS token \(tokenizer.eos_token is None\)"):
        UnlearningTrainer(
            model=lora(tiny_model),
            args=make_config(tmp_path, method="ga"),
            forget_dataset=Dataset.from_list(rows[0]),
            processing_class=tok,
        )


def test_rows_in_both_sets_are_warned_about_by_count(tiny_model, tokenizer, rows, tmp_path, caplog):
    forget, retain = rows
    # Two forget rows copied into retain; a third shares only its input, which is no overlap.
    shared_input = dict(forget[2], output=forget[2]["output"] + " (changed)")
    retain = retain + [forget[0], forget[1], shared_input]
    with caplog.at_level("WARNING", logger="hf_unlearn"):
        UnlearningTrainer(
            model=lora(tiny_model),
            args=make_config(tmp_path, method="gd"),
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )
    assert f"2 of {len(forget)} forget rows are also in the retain set" in caplog.text
    assert all(row["output"] not in caplog.text and row["input"] not in caplog.text for row in forget)


def test_tokenizer_without_pad_token_gets_eos(tiny_model, tokenizer, rows, tmp_path, caplog):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    with caplog.at_level("WARNING"):
        trainer = UnlearningTrainer(
            model=lora(tiny_model),
            args=make_config(tmp_path, method="ga"),
            forget_dataset=Dataset.from_list(rows[0]),
            processing_class=tok,
        )
    assert tok.pad_token == tok.eos_token and "no pad token" in caplog.text
    assert trainer.data_collator.pad_token_id == tok.eos_token_id
