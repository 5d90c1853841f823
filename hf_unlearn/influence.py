"""`InfluenceUnlearningTrainer`: LIBU (Kudelya & Shirnin 2025, LoRA-enhanced influence-based unlearning).

Two phases:

1. The influence step, once, before the first update of a run: the diagonal Fisher `F` of the retain NLL (the mean
   over retain batches of the squared batch gradient) and the gradient `g_f` of the forget NLL over the whole forget
   set, then `theta <- theta + influence_lr * g_f / (F + damping)` on the trainable parameters. This *raises* the
   forget NLL (removing data raises its loss; the LIBU repository's code subtracts the step instead, which re-learns
   the forget set), least along the coordinates the retain set depends on.
2. Fine-tuning on `method`'s objective (gradient difference by default) with Sophia, through [`UnlearningTrainer`].

The influence step runs in `run_extra_passes`, the same place as Sophia's Hessian refresh, at the start of the first
step: the model is wrapped, the optimizer built and a checkpoint loaded by then. Its metrics are logged once
(`influence/...`) and so recorded in the trainer state that every checkpoint saves: a run resumed from a checkpoint
finds the record and does not apply the step again on top of weights that already contain it.
"""

from __future__ import annotations

import logging

import torch

from .config import InfluenceUnlearningConfig
from .losses import IGNORE_INDEX, nll_sum, token_log_probs
from .reference import is_peft_model
from .trainer import UnlearningTrainer

logger = logging.getLogger(__name__)

# The log key whose presence in the trainer state's history means "the influence step was applied".
INFLUENCE_RECORD = "influence/update_norm"


def influence_update(
    forget_grad: list[torch.Tensor], fisher: list[torch.Tensor], influence_lr: float, damping: float
) -> list[torch.Tensor]:
    """The influence step of each parameter, `influence_lr * g_f / (F + damping)`, to be *added*: with a positive
    diagonal preconditioner it is an ascent direction of the forget NLL."""
    return [influence_lr * g.float() / (f.float() + damping) for g, f in zip(forget_grad, fisher)]


def answer_tokens(row: dict) -> int:
    """Number of answer tokens of a tokenised row that carry loss (the shifted labels that are not -100)."""
    return sum(label != IGNORE_INDEX for label in row["labels"][1:])


class InfluenceUnlearningTrainer(UnlearningTrainer):
    """LIBU: an influence step preconditioned by the retain set's diagonal Fisher, then Sophia fine-tuning.

    Takes the arguments of [`UnlearningTrainer`]; `args` is an [`InfluenceUnlearningConfig`] and `retain_dataset` is
    required (the Fisher is computed on it). The trainable parameters (the LoRA weights, or whatever the user left
    trainable) are the ones the influence step moves; it holds two extra copies of them (`F` and `g_f`) while it runs.
    Not supported with DeepSpeed or FSDP (they shard or flatten the parameters it reads and moves).
    """

    _tag_names = ["hf_unlearn", "unlearning", "libu", "influence-functions", "sophia"]

    def __init__(
        self,
        model,
        args: InfluenceUnlearningConfig | None = None,
        forget_dataset=None,
        retain_dataset=None,
        processing_class=None,
        **kwargs,
    ):
        if args is None:
            args = InfluenceUnlearningConfig(output_dir="influence_unlearning_output")
        if not isinstance(args, InfluenceUnlearningConfig):
            raise TypeError(f"args must be an InfluenceUnlearningConfig, got {type(args).__name__}.")
        if retain_dataset is None:
            raise ValueError(
                "InfluenceUnlearningTrainer computes the diagonal Fisher on the retain set: retain_dataset is required."
            )
        if kwargs.get("peft_config") is None and not is_peft_model(model) and not args.full_finetune:
            # Checked before a model name is loaded: the mistake costs nothing to find here.
            raise ValueError(
                "InfluenceUnlearningTrainer got a plain (non-peft) model and no peft_config: the influence step and "
                "phase 2 would change all of its base weights. Pass peft_config=LoraConfig(...) or a peft model, or "
                "set full_finetune=True in the InfluenceUnlearningConfig to train every weight on purpose."
            )
        super().__init__(model, args, forget_dataset, retain_dataset, processing_class, **kwargs)
        self._check_extra_passes_supported("The influence step")
        self._influence_applied = False

    def _uses_retain_set(self, args) -> bool:
        return True  # the Fisher needs it whatever the phase-2 objective

    # ---- phase 1 in the trainer loop ---------------------------------------------------------------------------

    def run_extra_passes(self, inputs: dict[str, torch.Tensor]) -> None:
        if not self.influence_step_done:
            self.log(self.influence_step())
        super().run_extra_passes(inputs)  # Sophia's Hessian refresh, when due, now at the moved weights

    @property
    def influence_step_done(self) -> bool:
        """Whether this trainer applied the influence step, or the checkpoint it resumed from records it."""
        return self._influence_applied or any(INFLUENCE_RECORD in entry for entry in self.state.log_history)

    # ---- phase 1 -------------------------------------------------------------------------------------------------

    def influence_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the influence step moves: every trainable parameter of the (unwrapped) model."""
        return [p for p in self._policy.parameters() if p.requires_grad]

    def fisher_row_batches(self) -> list[list[int]]:
        """Retain row indices of the Fisher's batches: one optimisation step's rows each, from a permutation seeded by
        `seed`, at most `fisher_num_batches` of them (the last one may be smaller)."""
        args = self.args
        size = args.per_device_train_batch_size * args.gradient_accumulation_steps * self.accelerator.num_processes
        order = torch.randperm(len(self.train_dataset.retain), generator=torch.Generator().manual_seed(args.seed))
        batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
        return batches[: args.fisher_num_batches]

    def _nll_sum(self, rows: list[dict]) -> torch.Tensor:
        """Summed answer-token NLL of tokenised `rows` under the model, in one forward."""
        batch = self._prepare_inputs(self.data_collator([{"forget": row} for row in rows]))
        with self.compute_loss_context_manager():
            logits = self._policy(
                input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"], use_cache=False
            ).logits
        return nll_sum(*token_log_probs(logits, batch["forget_labels"]))

    def _my_micro_batches(self, rows: list[dict], batch_size: int) -> list[list[dict]]:
        """This process's share of `rows`, in micro-batches of `batch_size`."""
        mine = rows[self.accelerator.process_index :: self.accelerator.num_processes]
        return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

    def _reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value, reduction="sum") if self.accelerator.num_processes > 1 else value

    def nll_gradient(self, rows: list[dict], params: list[torch.nn.Parameter]) -> tuple[list[torch.Tensor], float]:
        """Gradient of the mean answer-token NLL over all of `rows` (split over processes and micro-batches of
        `per_device_train_batch_size`, one backward each, normalised by the tokens of all of `rows`) and that mean."""
        total = max(sum(answer_tokens(row) for row in rows), 1)
        nll = torch.zeros((), device=self.args.device)
        for chunk in self._my_micro_batches(rows, self.args.per_device_train_batch_size):
            loss = self._nll_sum(chunk) / total
            loss.backward()
            nll += loss.detach()
        return self.take_gradients(params), self._reduce_sum(nll).item()

    @torch.no_grad()
    def mean_nll(self, rows: list[dict]) -> float:
        """Mean answer-token NLL over all of `rows`, without gradients."""
        total = max(sum(answer_tokens(row) for row in rows), 1)
        nll = torch.zeros((), device=self.args.device)
        for chunk in self._my_micro_batches(rows, self.args.per_device_eval_batch_size):
            nll += self._nll_sum(chunk) / total
        return self._reduce_sum(nll).item()

    def compute_fisher(self, params: list[torch.nn.Parameter] | None = None) -> tuple[list[torch.Tensor], float]:
        """The diagonal Fisher of the retain NLL, `mean over batches b of (grad NLL_b)^2`, over `fisher_row_batches`
        (each batch's gradient complete over its micro-batches and processes before it is squared), and the mean
        retain NLL over those rows."""
        params = self.influence_parameters() if params is None else params
        retain = self.train_dataset.retain
        fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        nll, tokens = 0.0, 0
        batches = self.fisher_row_batches()
        for indices in batches:
            rows = [retain[i] for i in indices]
            grads, batch_nll = self.nll_gradient(rows, params)
            for f, g in zip(fisher, grads):
                f.addcmul_(g.float(), g.float())
            batch_tokens = sum(answer_tokens(row) for row in rows)
            nll, tokens = nll + batch_nll * batch_tokens, tokens + batch_tokens
        return [f / len(batches) for f in fisher], nll / max(tokens, 1)

    def compute_forget_gradient(
        self, params: list[torch.nn.Parameter] | None = None
    ) -> tuple[list[torch.Tensor], float]:
        """Gradient of the forget NLL averaged over every answer token of the forget set, and that NLL."""
        params = self.influence_parameters() if params is None else params
        return self.nll_gradient(self.train_dataset.forget, params)

    def influence_step(self) -> dict[str, float]:
        """Phase 1: move the trainable parameters by `influence_lr * g_f / (F + damping)`; return what to log."""
        args = self.args
        params = self.influence_parameters()
        self._policy.train()
        fisher, retain_before = self.compute_fisher(params)
        batches = self.fisher_row_batches()
        forget_grad, forget_before = self.compute_forget_gradient(params)
        update = influence_update(forget_grad, fisher, args.effective_influence_lr, args.damping)
        del fisher, forget_grad
        with torch.no_grad():
            for p, delta in zip(params, update):
                p.add_(delta.to(p.dtype))
        self._influence_applied = True
        norm = torch.sqrt(sum(delta.square().sum() for delta in update)).item()
        retain_rows = [self.train_dataset.retain[i] for batch in batches for i in batch]
        metrics = {
            "influence/forget_nll_before": forget_before,
            "influence/forget_nll_after": self.mean_nll(self.train_dataset.forget),
            "influence/retain_nll_before": retain_before,
            "influence/retain_nll_after": self.mean_nll(retain_rows),
            INFLUENCE_RECORD: norm,
            "influence/fisher_batches": float(len(batches)),
        }
        logger.info("Influence step applied: %s", metrics)
        return metrics
