"""SimNPO (Fan et al. 2024): NPO without a reference model, on the length-normalised forget NLL."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import mean_token_nll, simnpo_loss
from .base import StepContext, UnlearningMethod, register_method


@dataclass
class SimNPOArguments:
    r"""
    Hyperparameters of method `"simnpo"`: loss = `simnpo_forget_weight * L_f + retain_nll_weight * retain NLL (+
    retain_kl_weight * retain KL)`, `L_f = -(2 / simnpo_beta) * mean_i logsigmoid(simnpo_beta * (Lbar_i -
    simnpo_delta))` with `Lbar_i` the mean answer-token NLL of forget row `i`. Defaults are open-unlearning's (beta 4.5,
    delta 0, gamma 0.125, alpha 1 = the default `retain_nll_weight`).

    Parameters:
        simnpo_beta (`float`, *optional*, defaults to `4.5`):
            Inverse temperature of the SimNPO loss.
        simnpo_delta (`float`, *optional*, defaults to `0.0`):
            Margin on the mean-NLL side: rows whose mean answer NLL is above it get a smaller push. It is the paper's
            margin gamma divided by beta (the paper writes the margin on the log-probability side).
        simnpo_forget_weight (`float`, *optional*, defaults to `0.125`):
            Weight of the forget term (open-unlearning's `gamma`; not the paper's margin gamma).
    """

    simnpo_beta: float = field(default=4.5, metadata={"help": "Inverse temperature of the SimNPO loss."})
    simnpo_delta: float = field(
        default=0.0,
        metadata={"help": "SimNPO margin on the mean answer NLL (the paper's margin gamma divided by beta)."},
    )
    simnpo_forget_weight: float = field(
        default=0.125,
        metadata={"help": "Weight of the SimNPO forget term (open-unlearning's gamma, not the paper's margin)."},
    )


@register_method
class SimNPO(UnlearningMethod):
    name = "simnpo"
    description = "SimNPO on the forget rows' mean NLL (no reference) + retain NLL (+ retain KL)"
    paper = "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning " \
        "(arXiv:2410.07163)"
    arguments = SimNPOArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        if self.args.simnpo_beta <= 0:
            raise ValueError(f"simnpo_beta must be > 0 (the SimNPO temperature), got {self.args.simnpo_beta}.")
        if self.args.simnpo_forget_weight < 0:
            raise ValueError(f"simnpo_forget_weight must be >= 0, got {self.args.simnpo_forget_weight}.")

    def loss(self, ctx: StepContext):
        mean_nll = mean_token_nll(ctx.forget_logp, ctx.forget_mask)
        per_row = simnpo_loss(mean_nll, self.args.simnpo_beta, self.args.simnpo_delta)
        has_answer = ctx.forget_mask.sum(-1).gt(0).to(per_row.dtype)  # a row without answer tokens adds nothing
        forget = ctx.row_mean(per_row * has_answer)  # a mean over the forget rows of the whole step, like NPO
        ctx.log("simnpo_loss", forget)
        return self.args.simnpo_forget_weight * forget + self.retain_loss(ctx)
