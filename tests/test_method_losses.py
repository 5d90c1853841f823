"""The pure loss functions of SimNPO, UNDIAL, WGA, SatImp and RMU against formulas written out on small tensors."""

import math

import pytest
import torch

from hf_unlearn.losses import (
    hidden_mse,
    mean_token_nll,
    satimp_weights,
    simnpo_loss,
    soft_cross_entropy,
    steering_vector,
    undial_targets,
    wga_weights,
)


def test_mean_token_nll_per_row_and_a_row_without_answer_tokens():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-5.0, -5.0, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert mean_token_nll(logp, mask).tolist() == [1.5, 0.0]


def test_simnpo_value_and_its_gradient_is_a_weighted_ascent():
    beta, delta = 4.5, 0.3
    mean_nll = torch.tensor([0.2, 1.0, 3.0], requires_grad=True)
    loss = simnpo_loss(mean_nll, beta, delta)
    expected = [-(2 / beta) * math.log(1 / (1 + math.exp(-beta * (x - delta)))) for x in (0.2, 1.0, 3.0)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    loss.sum().backward()
    # d/dLbar = -2 sigmoid(beta (delta - Lbar)): negative (the NLL is pushed up), in (-2, 0), smaller once forgotten
    weights = [-2 / (1 + math.exp(-beta * (delta - x))) for x in (0.2, 1.0, 3.0)]
    assert mean_nll.grad.tolist() == pytest.approx(weights, rel=1e-5)
    assert all(-2 < g < 0 for g in mean_nll.grad.tolist())


def test_wga_and_satimp_weights_are_fixed_powers_of_the_token_probability():
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.01]])).requires_grad_()
    assert wga_weights(logp, 2.0).tolist()[0] == pytest.approx([0.81, 0.25, 1e-4], rel=1e-5)
    sat = satimp_weights(logp, 5.0, 1.0)
    assert sat.tolist()[0] == pytest.approx([0.9**5 * 0.1, 0.5**5 * 0.5, 0.01**5 * 0.99], rel=1e-5)
    assert not wga_weights(logp, 1.0).requires_grad and not sat.requires_grad  # stop-gradient
    # WGA's per-token ascent term w * log p: its gradient w.r.t. log p is w alone
    (wga_weights(logp, 1.0) * logp).sum().backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.9, 0.5, 0.01], rel=1e-5)


def test_undial_targets_lower_the_answer_logit_then_normalise():
    ref = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    q = undial_targets(ref, torch.tensor([0, 2]), beta=3.0)
    z0 = torch.tensor([2.0 - 3.0, 0.0, -1.0])
    z1 = torch.tensor([0.5, 0.5, 0.5 - 3.0])
    torch.testing.assert_close(q, torch.stack([z0.softmax(-1), z1.softmax(-1)]))
    assert ref.tolist() == [[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]  # the reference logits are not changed


def test_soft_cross_entropy_value_gradient_and_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.tensor([[-100, -100, 3, 1], [-100, 2, 4, -100]])
    index = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    q = torch.softmax(torch.randn(len(index[0]), 5), -1)
    out = soft_cross_entropy(logits, q, labels)
    direct = -(q * torch.log_softmax(logits[index], -1)).sum(-1)
    expected = torch.zeros(2, 3).index_put(index, direct)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    grad = torch.zeros(2, 4, 5)
    grad[index] = torch.softmax(logits.detach()[index], -1) - q  # pi_theta - q at the answer positions only
    torch.testing.assert_close(logits.grad, grad)


def test_hidden_mse_and_the_steering_vector():
    h = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    assert hidden_mse(h, torch.tensor([1.0, 0.0])).tolist() == [[2.0, 0.5]]  # ((0,2)^2, (-1,0)^2) / d
    u = steering_vector(16, seed=3)
    r = torch.rand(16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(u, r / r.norm())
    assert torch.equal(u, steering_vector(16, seed=3)) and not torch.equal(u, steering_vector(16, seed=4))
