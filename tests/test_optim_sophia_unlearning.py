"""Sophia picked by name in `UnlearningConfig.unlearn_optim`, through `UnlearningTrainer` (any method, not only LIBU):
resolved in `get_optimizer_cls_and_kwargs`, refreshed in `training_step` with one extra backward when due, and
overridden by an optimizer the user passes to the trainer."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from hf_unlearn import UnlearningTrainer
from hf_unlearn.optim import SophiaG, unwrap_optimizer

from .conftest import short_rows
from .test_trainer import lora, make_config


@pytest.fixture(scope="module")
def rows(lume_rows):
    return short_rows(lume_rows["forget_train"], n=8), short_rows(lume_rows["retain_train"], n=8)


def make_trainer(model, tokenizer, rows, config, **kwargs) -> UnlearningTrainer:
    forget, retain = rows
    return UnlearningTrainer(
        model=model,
        args=config,
        forget_dataset=Dataset.from_list(forget),
        retain_dataset=Dataset.from_list(retain),
        processing_class=tokenizer,
        **kwargs,
    )


def count_backward_passes(model) -> list[int]:
    """A counter that goes up by one for every backward pass through the model's output layer."""
    calls = [0]
    model.get_output_embeddings().register_full_backward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_npo_with_sophia_by_name_trains_and_refreshes_once_per_due_step(tiny_model, tokenizer, rows, tmp_path):
    model = lora(tiny_model, nonzero=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    config = make_config(
        tmp_path,
        method="npo",
        retain_kl_weight=0.5,  # one no-grad reference pass per step as well: it must not count as a backward
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=4,
        learning_rate=1e-3,
        unlearn_optim="sophia",
        unlearn_optim_args='{"hessian_interval": 2}',  # a JSON string, as from the command line
    )
    assert config.unlearn_optim_args == {"hessian_interval": 2}
    trainer = make_trainer(model, tokenizer, rows, config)
    backward_passes = count_backward_passes(model)
    trainer.train()

    optimizer = unwrap_optimizer(trainer.optimizer)
    assert isinstance(optimizer, SophiaG)
    assert optimizer.num_steps == 4 and optimizer.hessian_interval == 2
    # 4 steps x 2 micro-batches, plus exactly one extra backward on each of the refresh steps 0 and 2
    assert trainer.hessian_refreshes == 2 and backward_passes[0] == 4 * 2 + 2
    group = optimizer.param_groups[0]
    assert group["initial_lr"] == 1e-3  # learning_rate (the linear schedule then decays the group's lr)
    assert group["bs"] == 2 * 2 * 2 * config.max_length  # rows per step (forget + retain) x max_length
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0}  # TrainingArguments' weight_decay
    hessians = [optimizer.state[p]["hessian"] for p in group["params"]]
    assert all(h.min() >= 0 for h in hessians) and sum(h.sum() for h in hessians) > 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_users_optimizer_cls_and_kwargs_wins_over_unlearn_optim(tiny_model, tokenizer, rows, tmp_path):
    model = lora(tiny_model, nonzero=False)
    config = make_config(tmp_path, method="ga", max_steps=2, unlearn_optim="sophia")
    trainer = make_trainer(model, tokenizer, rows, config, optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}))
    backward_passes = count_backward_passes(model)
    trainer.train()
    optimizer = unwrap_optimizer(trainer.optimizer)
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["initial_lr"] == 0.1
    assert trainer.hessian_refreshes == 0 and backward_passes[0] == 2  # no Sophia, no extra pass


def test_users_own_sophia_instance_gets_its_hessian_refreshed(tiny_model, tokenizer, rows, tmp_path):
    model = lora(tiny_model, nonzero=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = SophiaG(params, lr=1e-3, bs=1000, hessian_interval=1)
    trainer = make_trainer(model, tokenizer, rows, make_config(tmp_path, method="ga", max_steps=2),
                           optimizers=(optimizer, None))
    trainer.train()
    assert unwrap_optimizer(trainer.optimizer) is optimizer and trainer.hessian_refreshes == 2


def test_unknown_unlearn_optim_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unlearn_optim='adam_sophia': Unknown optimizer 'adam_sophia'\. "
                                         r"Registered optimizers: .*'sophia'"):
        make_config(tmp_path, unlearn_optim="adam_sophia")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(unlearn_optim="sophia", unlearn_optim_args={"lr": 1e-3}), r"Set learning_rate instead"),
        (dict(unlearn_optim="sophia", unlearn_optim_args={"weight_decay": 0.1}), r"Set weight_decay instead"),
        (dict(unlearn_optim="sophia", unlearn_optim_args={"rhoo": 0.1}), r"do not fit SophiaG.*'rhoo'"),
        (dict(unlearn_optim="sophia", unlearn_optim_args="{rho: 1"), "unlearn_optim_args is not valid JSON"),
        (dict(unlearn_optim_args={"rho": 0.1}), "unlearn_optim_args is set but unlearn_optim is None"),
    ],
)
def test_bad_unlearn_optim_args_are_refused(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **kwargs)
