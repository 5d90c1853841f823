"""SophiaG inside a plain `transformers.Trainer`: picked through `get_optimizer_cls_and_kwargs`, Hessian refreshed
with the GNB loss in `training_step`, and saved/restored with the Trainer's checkpoints."""

from __future__ import annotations

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from hf_unlearn.optim import SophiaG, causal_lm_gnb_loss, get_optimizer_cls, unwrap_optimizer
from hf_unlearn.support.tiny import tiny_causal_lm

MAX_LENGTH = 48
BATCH_SIZE = 2


class SophiaTrainer(Trainer):
    """The smallest trainer that drives SophiaG: the class comes from the registry, the GNB refresh runs before the
    training loss of every step that `should_update_hessian` selects (gradients are zero there: no accumulation)."""

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: TrainingArguments, model=None):
        kwargs = {"lr": args.learning_rate, "bs": BATCH_SIZE * MAX_LENGTH, "hessian_interval": 2}
        return get_optimizer_cls("sophia"), kwargs

    def training_step(self, model, inputs, num_items_in_batch=None):
        optimizer = unwrap_optimizer(self.optimizer)
        if optimizer.should_update_hessian(self.state.global_step):
            model.train()
            batch = self._prepare_inputs(inputs)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Seeded by the step, so a resumed run draws the same labels.
            generator = torch.Generator(logits.device).manual_seed(self.state.global_step)
            causal_lm_gnb_loss(logits, batch["labels"], batch["attention_mask"], generator=generator).backward()
            optimizer.update_hessian()
            model.zero_grad(set_to_none=True)
            self.hessian_refreshes = getattr(self, "hessian_refreshes", 0) + 1
        return super().training_step(model, inputs, num_items_in_batch)


def make_trainer(tokenizer, rows, output_dir, **overrides) -> SophiaTrainer:
    texts = [r["input"] + r["output"] for r in rows]
    dataset = [tokenizer(text, truncation=True, max_length=MAX_LENGTH) for text in texts]
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=1e-3,
        weight_decay=0.1,
        max_steps=4,
        use_cpu=True,
        report_to=[],
        logging_strategy="no",
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    args = TrainingArguments(**{**settings, **overrides})
    return SophiaTrainer(
        model=tiny_causal_lm(tokenizer, arch="olmo", num_hidden_layers=2, seed=0),
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )


def test_trainer_trains_with_sophia_and_checkpoints_its_hessian(tokenizer, memorised_rows, tmp_path):
    rows = memorised_rows["forget"]  # 8 short real LUME rows: 4 steps of 2 is one epoch
    trainer = make_trainer(tokenizer, rows, tmp_path / "full", save_strategy="steps", save_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    optimizer = unwrap_optimizer(trainer.optimizer)
    assert isinstance(optimizer, SophiaG)
    assert optimizer.num_steps == 4 and trainer.hessian_refreshes == 2  # steps 0 and 2
    # Trainer's two groups: weight decay 0.1 for matrices, 0 for norms/biases, passed through to SophiaG.
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.1]
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if "layers.0" in n)
    hessians = [optimizer.state[p]["hessian"] for g in optimizer.param_groups for p in g["params"]]
    assert all(h.min() >= 0 for h in hessians) and sum(h.sum() for h in hessians) > 0

    # The Trainer's optimizer.pt holds the Hessian, and resuming from step 2 lands on the same weights as the
    # uninterrupted run.
    saved = torch.load(tmp_path / "full" / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert all("hessian" in s for s in saved["state"].values())
    assert saved["param_groups"][0]["num_steps"] == 2

    resumed = make_trainer(tokenizer, rows, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    resumed_optimizer = unwrap_optimizer(resumed.optimizer)
    assert resumed_optimizer.num_steps == 4 and resumed.hessian_refreshes == 1  # only step 2 after the resume
    for (name, p), q in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
