"""SatImp: gradient ascent on each forget token weighted by p^beta1 * (1 - p)^beta2."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import satimp_weights
from .base import StepContext, UnlearningMethod, register_method


@dataclass
class SatImpArguments:
    r"""
    Hyperparameters of method `"satimp"`: `L_f = -token mean of stopgrad(p_t ** satimp_beta1 * (1 - p_t) **
    satimp_beta2) * l_t` over the forget answer tokens, plus the retain NLL and KL with their weights. The weight is
    small both for tokens already forgotten (p near 0) and for tokens held with certainty (p near 1).

    Parameters:
        satimp_beta1 (`float`, *optional*, defaults to `5.0`):
            Power of `p_t` in the token weight.
        satimp_beta2 (`float`, *optional*, defaults to `1.0`):
            Power of `1 - p_t` in the token weight.
    """

    satimp_beta1: float = field(default=5.0, metadata={"help": "SatImp: power of p_t in the token weight."})
    satimp_beta2: float = field(default=1.0, metadata={"help": "SatImp: power of (1 - p_t) in the token weight."})


@register_method
class SatImp(UnlearningMethod):
    name = "satimp"
    description = "SatImp: -token mean of p_t^b1 (1 - p_t)^b2 * NLL_t + retain NLL (+ retain KL)"
    paper = "Yang et al. 2025, Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning (arXiv:2505.11953)"
    arguments = SatImpArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        for name in ("satimp_beta1", "satimp_beta2"):
            if getattr(self.args, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self.args, name)}.")

    def loss(self, ctx: StepContext):
        weights = satimp_weights(ctx.forget_logp, self.args.satimp_beta1, self.args.satimp_beta2)
        forget = ctx.token_mean(weights * ctx.forget_logp)  # = -mean(w * NLL)
        ctx.log("satimp_loss", forget)
        return forget + self.retain_loss(ctx)
