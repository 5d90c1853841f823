"""The pure loss functions against values computed by hand or by a direct formula."""

import math

import torch

from hf_unlearn.losses import kl_per_token, nll_sum, npo_loss, sequence_log_probs, token_log_probs


def test_token_log_probs_shift_and_mask():
    # vocab 2, seq 3: logits at position t predict labels[t + 1]
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    logp, mask = token_log_probs(logits, labels)
    assert mask.tolist() == [[1.0, 1.0]]
    # position 0 is uniform -> log(1/2); position 1 gives p(0) = 3/4
    assert torch.allclose(logp, torch.tensor([[math.log(0.5), math.log(0.75)]]))
    labels = torch.tensor([[-100, -100, 0]])
    logp, mask = token_log_probs(logits, labels)
    assert mask.tolist() == [[0.0, 1.0]] and logp[0, 0] == 0


def test_sequence_log_probs_and_nll():
    logp = torch.tensor([[-1.0, -2.0, -4.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert sequence_log_probs(logp, mask).item() == -6.0
    assert nll_sum(logp, mask).item() == 6.0


def test_npo_loss_matches_the_paper_form():
    policy, ref, beta = torch.tensor([-3.0, -10.0]), torch.tensor([-5.0, -4.0]), 0.5
    expected = (2 / beta) * torch.log1p(torch.exp(beta * (policy - ref)))  # (2/b) log(1 + (pi/pi_ref)^b)
    assert torch.allclose(npo_loss(policy, ref, beta), expected)
    # at pi = pi_ref the loss is (2/beta) log 2 for any beta
    assert torch.allclose(npo_loss(torch.zeros(1), torch.zeros(1), 0.1), torch.tensor([20 * math.log(2)]))


def test_npo_gradient_tends_to_gradient_ascent_as_beta_vanishes():
    policy = torch.tensor([-2.0], requires_grad=True)
    npo_loss(policy, torch.tensor([-1.0]), 1e-4).sum().backward()
    # d/dlogp of (2/b) log(1 + e^{b d}) -> 1 as b -> 0: descending it lowers log pi, as ascent on the NLL does
    assert abs(policy.grad.item() - 1.0) < 1e-3


def test_kl_per_token_against_direct_formula():
    torch.manual_seed(0)
    policy, ref = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 5, -100]])
    kl = kl_per_token(policy, ref, labels)
    p, q = policy.softmax(-1), ref.softmax(-1)
    direct = (p * (p.log() - q.log())).sum(-1)[:, :-1]
    mask = labels[:, 1:].ne(-100)
    assert torch.allclose(kl[mask], direct[mask], atol=1e-6)
    assert (kl[~mask] == 0).all()
    assert torch.allclose(kl_per_token(policy, policy, labels), torch.zeros_like(kl), atol=1e-6)
