"""SimNPO, UNDIAL, WGA, SatImp and RMU in the trainer: the first step's loss against the definitions of
../shared/docs/METHODS.md written out again here, one unpadded row at a time from the model's own logits or hidden
states (adapter on: policy; adapter off: reference), and each one unlearning rows a tiny model memorised."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from hf_unlearn import UnlearningTrainer
from hf_unlearn.config import describe_lora_targets, sugd_lora_config
from hf_unlearn.methods import rmu_lora_config

from .conftest import short_rows
from .test_trainer import forget_nll, lora, make_config


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=4), short_rows(lume_rows["retain_train"], n=4)


def row_outputs(model, tokenizer, row, layer=None):
    """Logits (float64) and, with `layer`, the output hidden states of that decoder layer at the positions that
    predict the answer tokens of one unpadded row, and the answer tokens."""
    prompt = tokenizer(row["input"])["input_ids"]
    answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + answer])
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    hidden = out.hidden_states[layer + 1][0, positions].double() if layer is not None else None
    return out.logits[0, positions].double(), hidden, torch.tensor(answer)


def expected_loss(model, tokenizer, forget, retain, config) -> float:
    """The method's loss on one batch of all of `forget` and `retain`, from the definitions."""
    model.eval()
    layer = config.rmu_layer if config.method == "rmu" else None
    policy_f = [row_outputs(model, tokenizer, r, layer) for r in forget]
    policy_r = [row_outputs(model, tokenizer, r, layer) for r in retain]
    with model.disable_adapter():
        ref_f = [row_outputs(model, tokenizer, r, layer) for r in forget]
        ref_r = [row_outputs(model, tokenizer, r, layer) for r in retain]

    def logp(z, y):  # log p of the answer tokens
        return F.log_softmax(z, -1).gather(-1, y[:, None])[:, 0]

    m = config.method
    if m == "simnpo":
        mean_nll = torch.stack([-logp(z, y).mean() for z, _, y in policy_f])  # Lbar_i
        forget_term = -(2 / config.simnpo_beta) * F.logsigmoid(config.simnpo_beta * (mean_nll - config.simnpo_delta))
        loss = config.simnpo_forget_weight * forget_term.mean()
    elif m == "undial":
        terms = []
        for (z, _, y), (z_ref, _, _) in zip(policy_f, ref_f):
            q = F.softmax(z_ref - config.undial_beta * F.one_hot(y, z.shape[-1]), -1)
            terms.append(-(q * F.log_softmax(z, -1)).sum(-1))
        loss = torch.cat(terms).mean()
    elif m in ("wga", "satimp"):
        lp = torch.cat([logp(z, y) for z, _, y in policy_f])
        p = lp.exp()
        w = p**config.wga_beta if m == "wga" else p**config.satimp_beta1 * (1 - p) ** config.satimp_beta2
        loss = (w * lp).mean()  # -mean of w * NLL
    else:  # rmu
        d = policy_f[0][1].shape[-1]
        r = torch.rand(d, generator=torch.Generator().manual_seed(config.seed))
        target = config.rmu_steering_coeff * (r / r.norm()).double()
        forget_term = torch.cat([((h - target) ** 2).mean(-1) for _, h, _ in policy_f]).mean()
        retain_term = torch.cat([((h - h_ref) ** 2).mean(-1) for (_, h, _), (_, h_ref, _) in zip(policy_r, ref_r)])
        return (forget_term + config.rmu_alpha * retain_term.mean()).item()
    if config.uses_retain_nll:
        loss = loss + config.retain_nll_weight * -torch.cat([logp(z, y) for z, _, y in policy_r]).mean()
    if config.uses_retain_kl:
        kl = [(F.softmax(z, -1) * (F.log_softmax(z, -1) - F.log_softmax(q, -1))).sum(-1)
              for (z, _, _), (q, _, _) in zip(policy_r, ref_r)]
        loss = loss + config.retain_kl_weight * torch.cat(kl).mean()
    return loss.item()


METHOD_CONFIGS = {
    "simnpo": dict(method="simnpo", simnpo_delta=0.5, simnpo_forget_weight=0.5, retain_nll_weight=2.0),
    "simnpo-defaults": dict(method="simnpo"),
    "undial": dict(method="undial", undial_beta=3.0, retain_nll_weight=1.0),
    "wga+kl": dict(method="wga", wga_beta=2.0, retain_nll_weight=1.0, retain_kl_weight=0.5),
    "satimp": dict(method="satimp", retain_nll_weight=0.5),
    "rmu": dict(method="rmu", rmu_layer=2, rmu_steering_coeff=3.0, rmu_alpha=10.0),
}
TERMS = {"simnpo": "simnpo_loss", "undial": "undial_loss", "wga": "wga_loss", "satimp": "satimp_loss",
         "rmu": "rmu_forget"}


@pytest.mark.parametrize("name", list(METHOD_CONFIGS))
def test_first_step_loss_equals_independent_computation(name, tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model)  # B random: the policy differs from the reference at step 0
    config = make_config(tmp_path, reference="base", **METHOD_CONFIGS[name])
    expected = expected_loss(model, tokenizer, forget, retain, config)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(expected, rel=1e-5)
    assert {"forget_nll", TERMS[config.method]} <= set(logged)
    assert ("retain_kl" in logged) == config.uses_retain_kl and ("retain_nll" in logged) == config.uses_retain_nll
    if config.method == "rmu":
        assert logged["rmu_retain"] > 0 and "retain_nll" not in logged


def test_rmu_measures_its_steering_coefficient_on_the_frozen_model(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    model = lora(tiny_model)
    config = make_config(tmp_path, method="rmu", reference="base", rmu_layer=1, rmu_steering_scale=3.0, rmu_alpha=1.0)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
    model.eval()
    with model.disable_adapter():  # the frozen model's layer-1 outputs at the forget answer positions
        norms = torch.cat([row_outputs(model, tokenizer, r, layer=1)[1].norm(dim=-1) for r in forget])
    trainer.train()
    assert trainer.method.steering_coeff == pytest.approx(3.0 * norms.mean().item(), rel=1e-5)


def test_rmu_lora_config_adapts_down_proj_of_the_three_layers_up_to_the_steered_one(tiny_model):
    model = get_peft_model(tiny_model, rmu_lora_config(2, r=4))
    trained = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {f"base_model.model.model.layers.{i}.mlp.down_proj" for i in (0, 1, 2)}
    # described as built (the unlearn job's record and the benchmarks' reports)
    assert describe_lora_targets(rmu_lora_config(2, r=4)) == "down_proj of decoder layers 0-2"
    assert describe_lora_targets(sugd_lora_config()) == "down_proj, q_proj, up_proj, v_proj"
    assert describe_lora_targets(LoraConfig(target_modules=["up_proj"], layers_to_transform=[1, 3])) == \
        "up_proj of decoder layers 1, 3"
    assert describe_lora_targets(LoraConfig(target_modules="all-linear")) == "all linear layers"


def test_rmu_layer_beyond_the_model_is_refused(tiny_model, tokenizer, rows, tmp_path):
    with pytest.raises(ValueError, match="rmu_layer=4, but the model has 4 decoder layers"):
        UnlearningTrainer(model=lora(tiny_model), args=make_config(tmp_path, method="rmu", rmu_layer=4),
                          forget_dataset=Dataset.from_list(rows[0]), retain_dataset=Dataset.from_list(rows[1]),
                          processing_class=tokenizer)


@pytest.mark.parametrize("method", [dict(method="simnpo"), dict(method="undial", retain_kl_weight=0.5),
                                    dict(method="rmu", rmu_layer=2, rmu_alpha=2.0)])
def test_gradient_accumulation_gives_the_same_update(method, tiny_model, tokenizer, lume_rows, tmp_path):
    # Rows of different lengths make the per-micro-batch token counts differ, which a wrong normalisation shows.
    forget = lume_rows["forget_train"][:2] + short_rows(lume_rows["forget_train"], n=6)
    retain = lume_rows["retain_train"][:2] + short_rows(lume_rows["retain_train"], n=6)
    weights = []
    for batch, accumulation in ((4, 1), (2, 2)):
        model = lora(copy.deepcopy(tiny_model))
        config = make_config(tmp_path, reference="base", per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                             max_grad_norm=1e9, lr_scheduler_type="constant", **method)
        trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                    retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    initial = {n: p for n, p in lora(copy.deepcopy(tiny_model)).named_parameters() if "lora_" in n}
    assert max((weights[0][n] - initial[n]).abs().max().item() for n in initial) > 1e-4  # the step moved
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-5)


MEMORISED = {
    "simnpo": (dict(method="simnpo", retain_nll_weight=0.0), 3e-3),
    "undial": (dict(method="undial", retain_nll_weight=0.0), 3e-3),
    "wga": (dict(method="wga", retain_nll_weight=0.0), 3e-3),
    "satimp": (dict(method="satimp", retain_nll_weight=0.0), 3e-3),
    # On this 4-layer model a steered layer-2 output is partly repaired by the layers above: a larger step.
    "rmu": (dict(method="rmu", rmu_layer=2, rmu_alpha=1.0), 1e-2),
}


@pytest.mark.parametrize("name", list(MEMORISED))
def test_method_raises_forget_nll_of_a_memorised_model(name, memorised_model, memorised_rows, tokenizer, tmp_path):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    settings, lr = MEMORISED[name]
    peft_config = rmu_lora_config(2, r=8) if name == "rmu" else None
    model = get_peft_model(memorised_model, peft_config) if peft_config else lora(memorised_model, nonzero=False)
    before = forget_nll(model, tokenizer, forget)
    config = make_config(tmp_path, max_steps=24, learning_rate=lr, **settings)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(forget),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer)
    trainer.train()
    after = forget_nll(model, tokenizer, forget)
    assert before < 0.5  # memorised
    assert after > before + 1.0, (before, after)
    term = TERMS[settings["method"]]
    losses = [entry[term] for entry in trainer.state.log_history[:-1]]
    if name == "satimp":
        # SatImp's token weight p^b1 (1 - p)^b2 vanishes both at p = 1 and at p = 0: its (negative) loss first grows
        # in size as the memorised tokens loosen, then shrinks back as they are forgotten.
        assert min(losses) < losses[0] and min(losses) < losses[-1], losses
    else:
        assert losses[-1] < losses[0], losses
