"""InfluenceUnlearningTrainer (LIBU) on tiny models built from a config and real LUME rows.

The Fisher and the forget gradient are checked against a direct computation (one unpadded row at a time, gradients by
`torch.autograd.grad`); the influence step against an unpreconditioned step of the same norm; the two-phase run
through training, logging, checkpointing and resuming.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_unlearn import InfluenceUnlearningConfig, InfluenceUnlearningTrainer, UnlearningConfig
from hf_unlearn.config import LIBU_PRESETS
from hf_unlearn.influence import INFLUENCE_RECORD, influence_update
from hf_unlearn.optim import SophiaG, unwrap_optimizer

from .conftest import short_rows
from .test_trainer import lora
from .test_trainer import make_config as base_config


def make_config(tmp_path, **kwargs) -> InfluenceUnlearningConfig:
    return base_config(tmp_path, InfluenceUnlearningConfig, **{"per_device_train_batch_size": 2, **kwargs})


def make_trainer(model, tokenizer, forget, retain, config) -> InfluenceUnlearningTrainer:
    return InfluenceUnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
    )


def row_nll_sum(model, tokenizer, row) -> tuple[torch.Tensor, int]:
    """Summed NLL of one unpadded row's answer tokens (and EOS), with gradients, and how many tokens that is."""
    prompt = tokenizer(row["input"])["input_ids"]
    answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return F.cross_entropy(logits[positions].float(), torch.tensor(answer), reduction="sum"), len(answer)


def mean_nll_gradient(model, tokenizer, rows, params) -> list[torch.Tensor]:
    """Gradient of the mean answer-token NLL over `rows`, computed directly."""
    sums, counts = zip(*(row_nll_sum(model, tokenizer, row) for row in rows))
    return list(torch.autograd.grad(sum(sums) / sum(counts), params, allow_unused=True))


def mean_nll(model, tokenizer, rows) -> float:
    with torch.no_grad():
        sums, counts = zip(*(row_nll_sum(model, tokenizer, row) for row in rows))
    return (sum(sums) / sum(counts)).item()


@pytest.fixture(scope="module")
def rows(lume_rows):
    # Rows of different lengths make micro-batches differ in tokens, which a wrong normalisation shows.
    forget = lume_rows["forget_train"][:1] + short_rows(lume_rows["forget_train"], n=4)
    retain = lume_rows["retain_train"][:1] + short_rows(lume_rows["retain_train"], n=5)
    return forget, retain


@pytest.mark.parametrize("batch, accumulation", [(4, 1), (2, 2)])
def test_fisher_and_forget_gradient_equal_a_direct_computation(batch, accumulation, tiny_model, tokenizer, rows,
                                                               tmp_path):
    forget, retain = rows
    model = lora(tiny_model, nonzero=True)  # B != 0: the LoRA A matrices get gradients too
    config = make_config(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation)
    trainer = make_trainer(model, tokenizer, forget, retain, config)
    params = trainer.influence_parameters()
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)

    batches = trainer.fisher_row_batches()
    assert [len(b) for b in batches] == [4, 2]  # the rows of one optimisation step each; the last one smaller
    assert sorted(i for b in batches for i in b) == list(range(len(retain)))
    fisher, retain_nll = trainer.compute_fisher(params)
    forget_grad, forget_nll = trainer.compute_forget_gradient(params)

    model.train()
    expected_fisher = [torch.zeros_like(p) for p in params]
    for indices in batches:
        for f, g in zip(expected_fisher, mean_nll_gradient(model, tokenizer, [retain[i] for i in indices], params)):
            f += g.square()
    expected_fisher = [f / len(batches) for f in expected_fisher]
    expected_forget = mean_nll_gradient(model, tokenizer, forget, params)
    assert any(f.abs().max() > 0 for f in fisher)
    # float32 sums in a different order: compare relative to each tensor's scale
    for got, want in zip(fisher + forget_grad, expected_fisher + expected_forget):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5 * want.abs().max().item())
    assert forget_nll == pytest.approx(mean_nll(model, tokenizer, forget), rel=1e-5)
    assert retain_nll == pytest.approx(mean_nll(model, tokenizer, retain), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # the extra passes leave no gradient behind


def test_influence_step_raises_forget_nll_and_spares_retain_more_than_a_plain_step(
    memorised_model, memorised_rows, tokenizer, tmp_path
):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    model = lora(memorised_model, nonzero=False)  # fresh LoRA: only B has gradients, and only B moves
    # A tiny memorised model has a tiny Fisher (median 1e-11, top percentile 1e-8): the damping must be of that order
    # for it to matter. At 1e-8 the step spares the retain rows about 0.4x as much as a plain step of its norm; at
    # 1e-7 only 0.8x, too close to the bar to hold across thread counts. lr 3e-6 raised the forget NLL by only 0.07
    # with the packages installed on 2026-12-06 (0.033 -> 0.104, under the 0.1 bar), 5e-6 by 0.24 (retain 0.38x).
    config = make_config(tmp_path, per_device_train_batch_size=4, damping=1e-8, influence_lr=5e-6)
    trainer = make_trainer(model, tokenizer, forget, retain, config)
    params = trainer.influence_parameters()
    fisher, _ = trainer.compute_fisher(params)
    forget_grad, _ = trainer.compute_forget_gradient(params)
    start = [p.detach().clone() for p in params]
    before = mean_nll(model, tokenizer, forget), mean_nll(model, tokenizer, retain)
    assert before[0] < 0.1  # memorised

    def nll_after(update):
        with torch.no_grad():
            for p, s, u in zip(params, start, update):
                p.copy_(s + u)
        return mean_nll(model, tokenizer, forget), mean_nll(model, tokenizer, retain)

    preconditioned = influence_update(forget_grad, fisher, config.influence_lr, config.damping)
    norm = torch.sqrt(sum(u.square().sum() for u in preconditioned))
    grad_norm = torch.sqrt(sum(g.square().sum() for g in forget_grad))
    plain = [g * (norm / grad_norm) for g in forget_grad]  # theta + lr' * g_f with the same update norm
    influence, baseline = nll_after(preconditioned), nll_after(plain)
    assert influence[0] > before[0] + 0.1, (before, influence)  # ascent: the forget NLL rises
    assert abs(influence[1] - before[1]) < 0.7 * abs(baseline[1] - before[1]), (before, influence, baseline)

    # The trainer's own step applies exactly that update and reports it.
    nll_after([torch.zeros_like(p) for p in params])
    metrics = trainer.influence_step()
    for p, s, u in zip(params, start, preconditioned):
        torch.testing.assert_close(p.detach(), s + u, rtol=1e-5, atol=1e-7)
    assert metrics[INFLUENCE_RECORD] == pytest.approx(norm.item(), rel=1e-4)
    assert metrics["influence/forget_nll_after"] == pytest.approx(influence[0], rel=1e-4)
    assert metrics["influence/forget_nll_before"] == pytest.approx(before[0], rel=1e-4)
    assert trainer.influence_step_done


def test_two_phase_run_trains_logs_saves_and_resumes(memorised_model, memorised_rows, tokenizer, tmp_path):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]

    def run(output_dir, resume=None):
        model = lora(copy.deepcopy(memorised_model), nonzero=False)
        config = make_config(
            tmp_path,
            output_dir=str(output_dir),
            max_steps=6,  # 4 steps per epoch: the checkpoint at step 3 is mid-epoch
            learning_rate=1e-3,
            influence_lr=3e-5,
            damping=1e-7,
            hessian_interval=2,
            save_strategy="steps",
            save_steps=3,
        )
        trainer = make_trainer(model, tokenizer, forget, retain, config)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    trainer, full = run(tmp_path / "full")
    logs = trainer.state.log_history
    influence_logs = [entry for entry in logs if INFLUENCE_RECORD in entry]
    assert len(influence_logs) == 1 and influence_logs[0]["step"] == 0  # logged once, before the first update
    phase1 = influence_logs[0]
    assert phase1["influence/forget_nll_after"] > phase1["influence/forget_nll_before"] + 0.1
    assert phase1[INFLUENCE_RECORD] > 0 and phase1["influence/fisher_batches"] == 4
    assert sum("loss" in entry for entry in logs) == 6 and {"forget_nll", "retain_nll"} <= set(logs[1])
    optimizer = unwrap_optimizer(trainer.optimizer)
    assert isinstance(optimizer, SophiaG) and optimizer.num_steps == 6
    assert trainer.hessian_refreshes == 3  # steps 0, 2, 4
    assert optimizer.param_groups[0]["rho"] == 0.04 and optimizer.param_groups[0]["hessian_interval"] == 2

    # The checkpoint holds Sophia's Hessian and the record of the influence step.
    checkpoint = tmp_path / "full" / "checkpoint-3"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert saved["param_groups"][0]["num_steps"] == 3
    assert all(s["hessian"].abs().sum() > 0 for s in saved["state"].values() if "hessian" in s)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert any(INFLUENCE_RECORD in entry for entry in state["log_history"])

    resumed, weights = run(tmp_path / "resumed", resume=str(checkpoint))
    assert not resumed._influence_applied  # the checkpoint's weights already contain the step
    assert sum(INFLUENCE_RECORD in entry for entry in resumed.state.log_history) == 1
    assert resumed.hessian_refreshes == 1 and resumed.state.global_step == 6  # only step 4 after the resume
    for name in full:
        torch.testing.assert_close(weights[name], full[name], rtol=0, atol=1e-6)


# ---- configuration ------------------------------------------------------------------------------------------------


def test_presets_are_documented_settings(tmp_path):
    config = InfluenceUnlearningConfig.from_preset("libu-3", output_dir=str(tmp_path), report_to="none")
    assert (config.method, config.unlearn_optim, config.damping, config.sophia_rho) == ("gd", "sophia", 1e-3, 0.04)
    assert config.learning_rate == 2e-5 and config.effective_influence_lr == 2e-5
    assert config.unlearn_optim_kwargs == {"rho": 0.04, "hessian_interval": 10}
    assert [LIBU_PRESETS[name]["learning_rate"] for name in ("libu-1", "libu-2", "libu-3")] == [4e-5, 3e-5, 2e-5]
    overridden = InfluenceUnlearningConfig.from_preset("libu-1", output_dir=str(tmp_path), damping=1e-2)
    assert overridden.damping == 1e-2 and overridden.learning_rate == 4e-5
    with pytest.raises(ValueError, match="Unknown LIBU preset 'libu-4'. Choose one of: libu-1, libu-2, libu-3"):
        InfluenceUnlearningConfig.from_preset("libu-4", output_dir=str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(damping=0.0), "damping must be > 0"),
        (dict(influence_lr=-1.0), "influence_lr must be > 0"),
        (dict(fisher_num_batches=0), "fisher_num_batches must be >= 1"),
        (dict(hessian_interval=0), "hessian_interval must be an integer >= 1"),
        (dict(unlearn_optim_args={"rho": 0.1}), r"Set sophia_rho instead of unlearn_optim_args\['rho'\]"),
    ],
)
def test_bad_influence_settings_are_refused(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **kwargs)


def test_influence_trainer_needs_a_retain_set_and_its_config(tiny_model, tokenizer, rows, tmp_path):
    forget, _ = rows
    with pytest.raises(ValueError, match="computes the diagonal Fisher on the retain set: retain_dataset is required"):
        InfluenceUnlearningTrainer(
            model=lora(tiny_model), args=make_config(tmp_path), forget_dataset=Dataset.from_list(forget),
            processing_class=tokenizer,
        )
    with pytest.raises(TypeError, match="args must be an InfluenceUnlearningConfig"):
        make_trainer(lora(tiny_model), tokenizer, forget, forget,
                     UnlearningConfig(output_dir=str(tmp_path), report_to="none"))


def test_plain_model_without_peft_config_is_refused_unless_full_finetune(tiny_model, tokenizer, rows, tmp_path):
    forget, retain = rows
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    with pytest.raises(ValueError, match="plain \\(non-peft\\) model and no peft_config.*set full_finetune=True"):
        make_trainer(tiny_model, tokenizer, forget, retain, make_config(tmp_path))
    trainer = make_trainer(tiny_model, tokenizer, forget, retain, make_config(tmp_path, full_finetune=True))
    trainer.train()
    # The flag does what it says: base weights move.
    assert any(not torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    assert trainer.influence_step_done
