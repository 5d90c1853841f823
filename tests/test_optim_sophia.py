"""SophiaG against hand-computed numbers, the GNB helpers, the Hessian schedule and the state_dict round trip.

The expected values are written out in each test from the update rule

    m     <- b1 * m + (1 - b1) * g
    h     <- b2 * h + (1 - b2) * g_hat^2                (refresh steps only)
    theta <- theta * (1 - lr * wd) - lr * sign(m) * min(|m| / (rho * bs * h + eps), 1)
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn.optim import (
    SophiaG,
    causal_lm_gnb_loss,
    gnb_hessian_loss,
    sample_labels_from_logits,
    unwrap_optimizer,
)


def param(*values: float) -> torch.nn.Parameter:
    # float64 so that the hand-computed numbers compare at full precision.
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------------------
# One step against the formula
# --------------------------------------------------------------------------------------------------------------------
def test_first_step_without_hessian_is_a_clipped_sign_step():
    # h = 0, so |m| / (rho * bs * 0 + eps) is huge wherever m != 0 and the clip makes the step lr * sign(m).
    p = param(1.0, -2.0, 0.5)
    opt = SophiaG([p], lr=0.1, betas=(0.9, 0.99), rho=0.04, weight_decay=0.1, bs=8)
    p.grad = t(0.2, -0.4, 0.0)
    opt.step()
    # m = 0.1 * g = [0.02, -0.04, 0]; decay factor 1 - 0.1 * 0.1 = 0.99
    # theta = [1 * 0.99 - 0.1, -2 * 0.99 + 0.1, 0.5 * 0.99 - 0] (sign(0) = 0: a zero momentum does not move)
    torch.testing.assert_close(p.detach(), t(0.89, -1.88, 0.495))
    torch.testing.assert_close(opt.state[p]["exp_avg"], t(0.02, -0.04, 0.0))
    torch.testing.assert_close(opt.state[p]["hessian"], t(0.0, 0.0, 0.0))
    assert opt.state[p]["step"].item() == 1


def test_step_after_a_hessian_refresh_matches_the_formula_and_clips_at_one():
    lr, b1, b2, rho, bs = 0.1, 0.9, 0.5, 0.5, 4
    p = param(1.0, 1.0, 1.0)
    opt = SophiaG([p], lr=lr, betas=(b1, b2), rho=rho, weight_decay=0.0, eps=0.0, bs=bs)

    # Hessian refresh from a (GNB) gradient g_hat = [2, 1, 0.1]: h = 0.5 * 0 + 0.5 * g_hat^2 = [2, 0.5, 0.005]
    p.grad = t(2.0, 1.0, 0.1)
    opt.update_hessian()
    torch.testing.assert_close(opt.state[p]["hessian"], t(2.0, 0.5, 0.005))
    torch.testing.assert_close(p.detach(), t(1.0, 1.0, 1.0))  # a refresh never moves the weights
    assert opt.state[p]["step"].item() == 0  # ...and is not a step

    # Training gradient g = [1, -3, 5]: m = 0.1 * g = [0.1, -0.3, 0.5]
    # rho * bs * h = 2 * h = [4, 1, 0.01]; |m| / that = [0.025, 0.3, 50] -> clipped to [0.025, 0.3, 1]
    # theta = 1 - 0.1 * sign(m) * ratio = [1 - 0.0025, 1 + 0.03, 1 - 0.1]
    p.grad = t(1.0, -3.0, 5.0)
    opt.step()
    torch.testing.assert_close(p.detach(), t(0.9975, 1.03, 0.9))

    # Second step, no refresh: h unchanged; g = [1, 0, 0]: m = 0.9 * m + 0.1 * g = [0.19, -0.27, 0.45]
    # ratio = [0.19 / 4, 0.27 / 1, 0.45 / 0.01 -> 1] = [0.0475, 0.27, 1]
    p.grad = t(1.0, 0.0, 0.0)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg"], t(0.19, -0.27, 0.45))
    torch.testing.assert_close(p.detach(), t(0.9975 - 0.00475, 1.03 + 0.027, 0.9 - 0.1))


def test_eps_keeps_a_zero_hessian_finite():
    # Default eps = 1e-15: |m| / (0 + 1e-15) clips to 1; with m = 0 too, 0 / 1e-15 = 0, never 0 / 0.
    p = param(1.0, 1.0)
    opt = SophiaG([p], lr=0.1, weight_decay=0.0, bs=1)
    p.grad = t(1e-6, 0.0)
    opt.step()
    torch.testing.assert_close(p.detach(), t(0.9, 1.0))


def test_weight_decay_is_decoupled_from_the_gradient():
    # A zero gradient leaves the momentum at 0 (decay is not folded into g) and the weights shrink by 1 - lr * wd.
    lr, wd = 0.1, 0.5
    decayed, not_decayed = param(2.0, -4.0), param(2.0, -4.0)
    opt = SophiaG(
        [{"params": [decayed], "weight_decay": wd}, {"params": [not_decayed], "weight_decay": 0.0}], lr=lr, bs=1
    )
    decayed.grad = t(0.0, 0.0)
    not_decayed.grad = t(0.0, 0.0)
    opt.step()
    torch.testing.assert_close(decayed.detach(), t(2.0 * 0.95, -4.0 * 0.95))
    torch.testing.assert_close(not_decayed.detach(), t(2.0, -4.0))
    torch.testing.assert_close(opt.state[decayed]["exp_avg"], t(0.0, 0.0))

    # With a gradient, the decay is the same multiplicative factor and the step is added on top:
    # theta = 2 * 0.95 - 0.1 * sign(m) (clipped, h = 0) = 1.8 (an L2 penalty would instead have changed m).
    decayed.grad = t(1.0, 1.0)
    before = decayed.detach().clone()
    opt.step()
    torch.testing.assert_close(decayed.detach(), before * 0.95 - 0.1)


def test_param_groups_and_params_without_grad():
    fast, slow, frozen = param(1.0), param(1.0), param(1.0)
    opt = SophiaG([{"params": [fast], "lr": 0.5}, {"params": [slow, frozen]}], lr=0.1, weight_decay=0.1, bs=1)
    fast.grad, slow.grad = t(1.0), t(1.0)  # frozen.grad stays None
    opt.step()
    torch.testing.assert_close(fast.detach(), t(1.0 * (1 - 0.5 * 0.1) - 0.5))
    torch.testing.assert_close(slow.detach(), t(1.0 * (1 - 0.1 * 0.1) - 0.1))
    torch.testing.assert_close(frozen.detach(), t(1.0))  # no grad: skipped, not even decayed
    assert frozen not in opt.state
    opt.update_hessian()  # skips it too
    assert frozen not in opt.state


def test_maximize_ascends():
    p = param(1.0)
    opt = SophiaG([p], lr=0.1, weight_decay=0.0, bs=1, maximize=True)
    p.grad = t(2.0)
    opt.step()
    torch.testing.assert_close(p.detach(), t(1.1))
    torch.testing.assert_close(opt.state[p]["exp_avg"], t(-0.07))  # m tracks -g: (1 - 0.965) * -2


def test_bf16_params_do_not_produce_nan():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.bfloat16))
    opt = SophiaG([p], lr=0.1, weight_decay=0.0, bs=1)
    p.grad = torch.tensor([0.0, 1.0], dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, 0.9], dtype=torch.bfloat16))


def test_invalid_hyperparameters_are_refused():
    p = [param(1.0)]
    for kwargs in (
        {"lr": -1.0},
        {"betas": (1.0, 0.99)},
        {"rho": -0.1},
        {"bs": 0},
        {"hessian_interval": 0},
        {"hessian_estimator": "hutchinson"},
        {"hessian_update_prob": 0.0},
    ):
        with pytest.raises(ValueError):
            SophiaG(p, **{"bs": 1, **kwargs})
    with pytest.raises(TypeError):
        SophiaG(p)  # bs has no default: a silently wrong token count would rescale every step
    with pytest.raises(ValueError, match="one Hessian schedule"):
        SophiaG([{"params": [param(1.0)]}, {"params": [param(1.0)], "hessian_interval": 3}], bs=1)


# --------------------------------------------------------------------------------------------------------------------
# The Hessian schedule and the squared-gradient estimator
# --------------------------------------------------------------------------------------------------------------------
def test_interval_schedule_refreshes_at_step_0_k_2k():
    opt = SophiaG([param(1.0)], bs=1, hessian_interval=10)
    assert opt.hessian_interval == 10 and opt.hessian_estimator == "gnb"
    assert [s for s in range(31) if opt.should_update_hessian(s)] == [0, 10, 20, 30]
    # Without an argument it uses the optimizer's own step count.
    assert opt.should_update_hessian() and opt.num_steps == 0
    opt.param_groups[0]["params"][0].grad = t(1.0)
    opt.step()
    assert opt.num_steps == 1 and not opt.should_update_hessian()


def test_probability_schedule_is_random_but_reproducible():
    a = SophiaG([param(1.0)], bs=1, hessian_update_prob=0.25, seed=3)
    b = SophiaG([param(1.0)], bs=1, hessian_update_prob=0.25, seed=3)
    c = SophiaG([param(1.0)], bs=1, hessian_update_prob=0.25, seed=4)
    draws = [a.should_update_hessian(s) for s in range(2000)]
    assert draws == [b.should_update_hessian(s) for s in range(2000)]  # same on every process / after resume
    assert draws != [c.should_update_hessian(s) for s in range(2000)]
    assert 0.2 < sum(draws) / len(draws) < 0.3
    assert [a.should_update_hessian(s) for s in range(5)] == [a.should_update_hessian(s) for s in range(5)]


def test_sq_grad_estimator_refreshes_inside_step_from_the_training_gradient():
    lr, b1, b2, rho, bs = 0.1, 0.9, 0.5, 0.5, 4
    p = param(1.0)
    opt = SophiaG(
        [p],
        lr=lr,
        betas=(b1, b2),
        rho=rho,
        weight_decay=0.0,
        eps=0.0,
        bs=bs,
        hessian_estimator="sq_grad",
        hessian_interval=2,
    )
    # Step t=0 (a refresh step): h = 0.5 * 2^2 = 2 first, then m = 0.2, ratio = 0.2 / (0.5 * 4 * 2) = 0.05
    p.grad = t(2.0)
    opt.step()
    torch.testing.assert_close(opt.state[p]["hessian"], t(2.0))
    torch.testing.assert_close(p.detach(), t(1.0 - 0.1 * 0.05))
    # Step t=1: no refresh, h stays 2.
    p.grad = t(10.0)
    opt.step()
    torch.testing.assert_close(opt.state[p]["hessian"], t(2.0))
    # Step t=2: refresh with g = 1: h = 0.5 * 2 + 0.5 * 1 = 1.5
    p.grad = t(1.0)
    opt.step()
    torch.testing.assert_close(opt.state[p]["hessian"], t(1.5))


def test_update_hessian_accepts_explicit_grads():
    a, b = param(1.0, 1.0), param(1.0)
    opt = SophiaG([{"params": [a]}, {"params": [b]}], betas=(0.9, 0.5), bs=1)
    a.grad = t(100.0, 100.0)  # ignored: explicit grads win, .grad is left alone
    opt.update_hessian([t(2.0, 4.0), None])
    torch.testing.assert_close(opt.state[a]["hessian"], t(2.0, 8.0))
    assert b not in opt.state
    torch.testing.assert_close(a.grad, t(100.0, 100.0))
    with pytest.raises(ValueError, match="2 parameters"):
        opt.update_hessian([t(1.0, 1.0)])


# --------------------------------------------------------------------------------------------------------------------
# The GNB helpers: labels are sampled from the model, not the data
# --------------------------------------------------------------------------------------------------------------------
def test_sampled_labels_equal_the_argmax_of_a_peaked_softmax():
    modes = torch.tensor([[3, 0, 7, 7], [1, 2, 5, 9]])
    logits = 100.0 * F.one_hot(modes, num_classes=10).float()  # probability of anything else: ~e^-100 = 0
    true_labels = torch.tensor([[-100, 4, 4, 4], [1, 1, -100, 1]])
    sampled = sample_labels_from_logits(logits, true_labels, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([[-100, 0, 7, 7], [1, 2, -100, 9]])  # the model's mode, -100 kept where labels are -100
    assert torch.equal(sampled, expected)
    assert sampled.dtype == torch.long

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    sampled = sample_labels_from_logits(logits, attention_mask=mask)
    assert torch.equal(sampled, torch.tensor([[3, 0, 7, -100], [1, 2, 5, 9]]))


def test_sampled_labels_follow_the_model_distribution_not_the_true_labels():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().expand(20_000, 3)
    true_labels = torch.full((20_000,), 2)  # the data says "2" everywhere
    sampled = sample_labels_from_logits(logits, true_labels, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(sampled, minlength=3).float() / 20_000
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    assert not torch.equal(sampled, true_labels)

    # A fixed generator makes the draw reproducible.
    again = sample_labels_from_logits(logits, true_labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, again)


def test_gnb_loss_is_the_mean_cross_entropy_over_scored_positions():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0]])
    sampled = torch.tensor([0, -100, 2])
    # CE = logsumexp(row) - row[label], averaged over the 2 scored rows
    expected = ((torch.logsumexp(logits[0], 0) - 2.0) + (torch.logsumexp(logits[2], 0) - 1.0)) / 2
    torch.testing.assert_close(gnb_hessian_loss(logits, sampled), expected)
    # Nothing scored: 0, still differentiable.
    empty = gnb_hessian_loss(logits.requires_grad_(), torch.full((3,), -100))
    assert empty.item() == 0.0 and empty.requires_grad


def test_causal_lm_gnb_loss_shifts_like_hugging_face_labels():
    # Position t's logits predict token t + 1. Peak every position on a known token, except make position 0
    # uniform: its next-token label is -100 (prompt), so it must not be scored (it would add log(5) if it were).
    logits = 50.0 * F.one_hot(torch.tensor([[0, 1, 2, 3]]), num_classes=5).float()
    logits[0, 0] = 0.0
    labels = torch.tensor([[-100, -100, 9, 9]])  # HF convention: labels[t] is the target of logits[t - 1]
    loss = causal_lm_gnb_loss(logits, labels, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-6  # only positions 1, 2 are scored, and the sampled labels are their modes

    # Same draw as doing the shift by hand.
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = -100
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, -2:] = 0
    sampled = sample_labels_from_logits(noisy[:, :-1], labels[:, 1:], mask[:, 1:], generator=gen_a)
    by_hand = gnb_hessian_loss(noisy[:, :-1], sampled)
    torch.testing.assert_close(causal_lm_gnb_loss(noisy, labels, mask, gen_b), by_hand)


def test_gnb_refresh_uses_sampled_labels_and_differs_from_the_true_label_curvature():
    torch.manual_seed(0)
    x = torch.randn(32, 4, dtype=torch.float64)
    true_labels = torch.randint(0, 5, (32,))
    w0 = torch.randn(4, 5, dtype=torch.float64)

    def refreshed_hessian(labels_fn) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.nn.Parameter(w0.clone())
        opt = SophiaG([w], betas=(0.965, 0.99), bs=32)
        logits = x @ w
        labels = labels_fn(logits)
        gnb_hessian_loss(logits, labels).backward()
        grad = w.grad.clone()
        opt.update_hessian()
        opt.zero_grad()
        return opt.state[w]["hessian"], grad

    sampled_labels = sample_labels_from_logits(x @ w0, generator=torch.Generator().manual_seed(0))
    h_sampled, g_hat = refreshed_hessian(lambda logits: sampled_labels)
    h_true, _ = refreshed_hessian(lambda logits: true_labels)
    assert not torch.equal(sampled_labels, true_labels)
    # h = 0.99 * 0 + 0.01 * g_hat^2, with g_hat the gradient of the mean CE on the *sampled* labels
    torch.testing.assert_close(h_sampled, 0.01 * g_hat * g_hat)
    assert not torch.allclose(h_sampled, h_true)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------
def _run(opt: SophiaG, params: list[torch.nn.Parameter], steps: range) -> None:
    """Deterministic fake training: gradients and GNB gradients are functions of the step number."""
    for s in steps:
        if opt.should_update_hessian():
            for i, p in enumerate(params):
                p.grad = torch.sin(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) + s + i)
            opt.update_hessian()
            opt.zero_grad()
        for i, p in enumerate(params):
            p.grad = torch.cos(3.0 * p.detach() + s - i)
        opt.step()


def test_state_dict_round_trip_resumes_exactly():
    def make():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
        opt = SophiaG(
            [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=0.05, bs=16, hessian_interval=2
        )
        return params, opt

    params, opt = make()
    _run(opt, params, range(3))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # the same path as Trainer's optimizer.pt
    saved_params = [p.detach().clone() for p in params]
    _run(opt, params, range(3, 5))  # uninterrupted

    resumed_params, resumed = make()
    with torch.no_grad():
        for p, saved in zip(resumed_params, saved_params):
            p.copy_(saved)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.num_steps == 3
    assert all(resumed.state[p]["hessian"].abs().sum() > 0 for p in resumed_params)
    _run(resumed, resumed_params, range(3, 5))

    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "hessian"):
            assert torch.equal(opt.state[p][key], resumed.state[q][key])
    assert resumed.num_steps == opt.num_steps == 5


def test_unwrap_optimizer_finds_sophia_under_a_wrapper():
    class Wrapper(torch.optim.Optimizer):  # like accelerate's AcceleratedOptimizer: holds it as `.optimizer`
        def __init__(self, optimizer):
            self.optimizer = optimizer

    opt = SophiaG([param(1.0)], bs=1)
    wrapped = Wrapper(Wrapper(opt))
    assert not hasattr(wrapped, "update_hessian")
    assert unwrap_optimizer(wrapped) is opt
    assert unwrap_optimizer(opt) is opt
