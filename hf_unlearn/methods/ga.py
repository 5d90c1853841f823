"""Gradient ascent (Jang et al. 2023): minus the forget NLL."""

from __future__ import annotations

from .base import StepContext, UnlearningMethod, register_method


@register_method
class GradientAscent(UnlearningMethod):
    name = "ga"
    description = "gradient ascent: minus the forget NLL"
    paper = "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language Models"

    def loss(self, ctx: StepContext):
        return -ctx.forget_nll
