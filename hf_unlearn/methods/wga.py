"""WGA, weighted gradient ascent: ascent on each forget token weighted by its own probability to a power."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import wga_weights
from .base import StepContext, UnlearningMethod, register_method


@dataclass
class WGAArguments:
    r"""
    Hyperparameters of method `"wga"`: `L_f = -token mean of stopgrad(p_t ** wga_beta) * l_t` over the forget answer
    tokens (`l_t` the token NLL, `p_t = exp(-l_t)`), plus the retain NLL and KL with their weights. Tokens the model
    already finds unlikely get little push, so the ascent does not run away on them.

    Parameters:
        wga_beta (`float`, *optional*, defaults to `1.0`):
            Power of the token probability in the weight (0 gives gradient ascent).
    """

    wga_beta: float = field(
        default=1.0, metadata={"help": "WGA: power of the token probability that weights its ascent (0: plain GA)."}
    )


@register_method
class WGA(UnlearningMethod):
    name = "wga"
    description = "weighted gradient ascent: -token mean of p_t^beta * NLL_t + retain NLL (+ retain KL)"
    paper = "Wang et al. 2025, Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond " \
        "(arXiv:2502.19301)"
    arguments = WGAArguments
    retain_terms = ("nll", "kl")

    def check(self) -> None:
        if self.args.wga_beta < 0:
            raise ValueError(f"wga_beta must be >= 0, got {self.args.wga_beta}.")

    def loss(self, ctx: StepContext):
        weights = wga_weights(ctx.forget_logp, self.args.wga_beta)
        forget = ctx.token_mean(weights * ctx.forget_logp)  # = -mean(w * NLL): minimising it ascends the NLL
        ctx.log("wga_loss", forget)
        return forget + self.retain_loss(ctx)
