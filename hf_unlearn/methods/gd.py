"""Gradient difference (Liu et al. 2022): minus the forget NLL plus the weighted retain NLL."""

from __future__ import annotations

from .base import StepContext, UnlearningMethod, register_method


@register_method
class GradientDifference(UnlearningMethod):
    name = "gd"
    description = "gradient difference: minus the forget NLL + retain_nll_weight * retain NLL"
    paper = "Liu et al. 2022, Continual Learning and Private Unlearning"
    retain_terms = ("nll",)

    def loss(self, ctx: StepContext):
        return -ctx.forget_nll + self.retain_loss(ctx)
