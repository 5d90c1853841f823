"""The pure loss functions against values computed by hand or by a direct formula."""

import math

import pytest
import torch

from hf_unlearn import losses
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


# --- the chunked functions against the unchunked formulas ------------------------------------------------------


def unchunked_token_log_probs(logits, labels):
    targets, mask = labels[:, 1:], labels[:, 1:].ne(-100)
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return logp * mask


def unchunked_kl(policy, ref, labels):
    p, q = torch.log_softmax(policy[:, :-1].double(), -1), torch.log_softmax(ref[:, :-1].double(), -1)
    return (p.exp() * (p - q)).sum(-1) * labels[:, 1:].ne(-100)


def random_batch(vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    policy = torch.randn(3, 9, vocab, generator=generator) * 3
    ref = torch.randn(3, 9, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (3, 9), generator=generator)
    labels[0, :4] = -100  # a prompt
    labels[1, 6:] = -100  # padding
    labels[2, :] = -100  # a row with no answer token
    return policy, ref, labels


@pytest.mark.parametrize("chunk_elements", [4 * 50, 7 * 50, 2**22])  # several chunks, a ragged last one, one
def test_chunked_log_probs_and_kl_equal_the_unchunked_formulas(monkeypatch, chunk_elements):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    policy, ref, labels = random_batch()
    weights = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))  # a non-uniform upstream gradient

    def value_and_grads(fn, *inputs):
        inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
        out = fn(*inputs, labels)
        (out * weights).sum().backward()
        return out.detach(), [x.grad for x in inputs]

    got, (grad,) = value_and_grads(lambda x, y: losses.token_log_probs(x, y)[0], policy)
    want, (want_grad,) = value_and_grads(unchunked_token_log_probs, policy.double())
    assert torch.allclose(got.double(), want, atol=1e-6) and torch.allclose(grad.double(), want_grad, atol=1e-6)

    got, grads = value_and_grads(losses.kl_per_token, policy, ref)
    want, want_grads = value_and_grads(unchunked_kl, policy.double(), ref.double())
    assert torch.allclose(got.double(), want, atol=1e-6)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g.double(), w, atol=1e-6)


def test_answer_level_reference_functions(monkeypatch):
    """What the trainer keeps of the reference pass (logits at the answer positions only) gives the same numbers."""
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 3 * 50)
    policy, ref, labels = random_batch(seed=2)
    index = losses.answer_positions(labels)
    targets = labels[:, 1:][index]
    picked = losses.answer_log_probs(ref[index], targets)
    assert torch.allclose(picked.double(), unchunked_token_log_probs(ref, labels)[index], atol=1e-6)
    ref_logp = losses.log_softmax_(ref[index].clone())
    assert torch.allclose(ref_logp, torch.log_softmax(ref[index], -1), atol=1e-6)
    kl = losses.answer_kl(policy, ref_logp, labels)
    assert torch.allclose(kl.double(), unchunked_kl(policy, ref, labels), atol=1e-6)


def test_gradcheck_of_the_chunked_functions(monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 2 * 6)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(5, 6, dtype=torch.float64, generator=generator), -1).requires_grad_()
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 5, 0]])
    index = losses.answer_positions(labels)
    assert len(index[0]) == 5
    # float64 in, float32 maths inside: gradcheck with a float32-sized tolerance
    assert torch.autograd.gradcheck(
        lambda x: losses._PickedLogProbs.apply(x, labels[:, 1:][index], *index), (logits,), eps=1e-3, atol=1e-3
    )
    assert torch.autograd.gradcheck(
        lambda x, q: losses._KLToReference.apply(x, q, *index), (logits, ref_logp), eps=1e-3, atol=1e-3
    )
