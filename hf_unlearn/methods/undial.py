"""UNDIAL (Dong et al. 2024): self-distillation towards the reference with the answer token's logit lowered."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import answer_positions, soft_cross_entropy, undial_targets
from .base import Needs, StepContext, UnlearningMethod, register_method


@dataclass
class UNDIALArguments:
    r"""
    Hyperparameters of method `"undial"`: at each forget answer position, `q = softmax(z_ref - undial_beta *
    onehot(y_t))` from the reference logits `z_ref` (the adapter-disabled pass), and the loss is the token mean of the
    cross-entropy `-sum_v q_v log pi_theta,v`, plus the retain NLL and KL with their weights (set `retain_nll_weight
    0` for the paper's forget-only form). Averaged over the answer tokens only: open-unlearning's version also
    averages over prompt and padding positions.

    Parameters:
        undial_beta (`float`, *optional*, defaults to `10.0`):
            How far the answer token's logit is lowered in the distillation target (the paper's gamma; it also reports
            3 and 30). The paper trains LoRA with r 8.
    """

    undial_beta: float = field(
        default=10.0,
        metadata={"help": "UNDIAL: how much the answer token's reference logit is lowered in the target (3-30)."},
    )


@register_method
class UNDIAL(UnlearningMethod):
    name = "undial"
    description = "UNDIAL: cross-entropy to softmax(z_ref - beta * onehot(y)) on forget answers + retain NLL (+ KL)"
    paper = "Dong et al. 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large " \
        "Language Models (arXiv:2402.10052)"
    arguments = UNDIALArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        if self.args.undial_beta < 0:
            raise ValueError(f"undial_beta must be >= 0, got {self.args.undial_beta}.")

    def needs(self) -> Needs:
        return Needs(forget_ref_logits=True, retain_nll=self.retain_nll_weight > 0, retain_kl=self.retain_kl_weight > 0)

    def loss(self, ctx: StepContext):
        targets = ctx.forget_labels[:, 1:][answer_positions(ctx.forget_labels)]
        q = undial_targets(ctx.reference.forget_logits, targets, self.args.undial_beta)
        forget = ctx.token_mean(soft_cross_entropy(ctx.forget_logits, q, ctx.forget_labels))
        ctx.log("undial_loss", forget)
        return forget + self.retain_loss(ctx)
