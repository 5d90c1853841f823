"""Membership-inference attacks: hand-computed values, the batched pass against the task's own, real MIA docs."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from hf_unlearn.metrics.mia import (
    DocumentTokenStats,
    document_losses_one_at_a_time,
    document_token_stats,
    loss_scores,
    membership_auc,
    mia_score,
    exposed_share,
    mia_scores_from_stats,
    min_k_plus_plus_scores,
    min_k_scores,
    score_mia,
    standardised_log_probs,
    zlib_entropy,
    zlib_scores,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def stats(log_probs, mean=None, std=None) -> DocumentTokenStats:
    log_probs = np.asarray(log_probs, float)
    mean = np.zeros_like(log_probs) if mean is None else np.asarray(mean, float)
    std = np.ones_like(log_probs) if std is None else np.asarray(std, float)
    return DocumentTokenStats(log_probs, mean, std)


@pytest.fixture(scope="module")
def mia_docs(lume_dir) -> dict[str, list[str]]:
    def read(name):
        with open(lume_dir / "mia" / f"{name}.jsonl") as f:
            return [json.loads(line)["document"] for line in f if line.strip()]

    return {"member": read("member"), "nonmember": read("nonmember")}


# --- AUC and the MIA score ------------------------------------------------------------------------------------


def test_auc_by_hand():
    assert membership_auc([3, 4], [1, 2]) == 1.0  # members all score higher
    assert membership_auc([1, 2], [3, 4]) == 0.0
    # Pairs (member > non-member): 3>1, 3>2, 0>1 no, 0>2 no -> 2 of 4.
    assert membership_auc([3, 0], [1, 2]) == pytest.approx(0.5)
    # Ties count one half: 1 vs 1 -> 0.5, 2 vs 1 -> 1 -> 0.75.
    assert membership_auc([1, 2], [1]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        membership_auc([float("nan")], [1.0])


def test_mia_score():
    assert mia_score(0.5) == 1.0
    assert mia_score(1.0) == 0.0
    assert mia_score(0.0) == 0.0
    assert mia_score(0.8) == pytest.approx(0.4)
    assert mia_score(0.3) == pytest.approx(0.6)


# --- attacks on hand-made token statistics --------------------------------------------------------------------


def test_loss_attack():
    docs = [stats([-1.0, -3.0]), stats([-0.5, -0.5, -0.5])]
    assert loss_scores(docs).tolist() == pytest.approx([-2.0, -0.5])
    assert docs[0].loss == pytest.approx(2.0)


def test_zlib_attack():
    text = "abc abc abc abc"
    assert zlib_entropy(text) == len(zlib.compress(text.encode("utf-8")))
    doc = stats([-1.0, -3.0])
    assert zlib_scores([doc], [text]).tolist() == pytest.approx([-2.0 / zlib_entropy(text)])
    with pytest.raises(ValueError):
        zlib_scores([doc], [])


def test_min_k_attack():
    doc = stats([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    # 20% of 10 tokens = the 2 lowest: -5 and -3.
    assert min_k_scores([doc], k=0.2).tolist() == pytest.approx([-4.0])
    assert min_k_scores([doc], k=1.0).tolist() == pytest.approx([np.mean(doc.log_probs)])
    # At least one token, even when k% of the length rounds down to zero.
    assert min_k_scores([stats([-1.0, -2.0])], k=0.2).tolist() == pytest.approx([-2.0])
    with pytest.raises(ValueError):
        min_k_scores([doc], k=0.0)


def test_min_k_plus_plus_attack():
    doc = stats(
        log_probs=[-1.0, -2.0, -4.0, -1.0, -3.0], mean=[-2.0, -2.0, -2.0, -1.0, -1.0], std=[1.0, 0.5, 2.0, 1.0, 4.0]
    )
    # (log p - mu) / sigma = [1, 0, -1, 0, -0.5]; 40% of 5 = the 2 lowest: -1 and -0.5.
    assert standardised_log_probs(doc).tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0, -0.5])
    assert min_k_plus_plus_scores([doc], k=0.4).tolist() == pytest.approx([-0.75])
    # A one-hot next-token distribution (sigma 0) stays finite.
    assert np.isfinite(min_k_plus_plus_scores([stats([0.0], mean=[0.0], std=[0.0])])).all()


def test_scores_from_stats_by_hand():
    # Members: lower loss, higher lowest-token log-probs, higher standardised values -> every AUC is 1.
    members = [stats([-0.1, -0.2, -0.3]), stats([-0.2, -0.2, -0.4])]
    nonmembers = [stats([-2.0, -3.0, -1.0]), stats([-1.5, -2.5, -4.0])]
    docs = ["same length text"] * 4
    result = mia_scores_from_stats(members, nonmembers, docs[:2], docs[2:], k=0.5)
    assert result == {
        "mia_loss_acc": 1.0,
        "mia_loss_auc": 1.0,
        "mia_final_score": 0.0,
        "mia_zlib_auc": 1.0,
        "mia_min_k_auc": 1.0,
        "mia_min_k_plus_plus_auc": 1.0,
        "mia_exposed_share": 1.0,  # both members' losses (0.2, 0.27) below the nonmembers' 5th percentile (~2.0)
        "mia_member_loss": pytest.approx((0.2 + 0.8 / 3) / 2),
        "mia_nonmember_loss": pytest.approx((2.0 + 8.0 / 3) / 2),
    }
    # Swapping the roles gives AUC 0, and the same MIA score 0.
    swapped = mia_scores_from_stats(nonmembers, members, docs[:2], docs[2:])
    assert swapped["mia_loss_acc"] == 0.0 and swapped["mia_final_score"] == 0.0


# --- the batched pass -----------------------------------------------------------------------------------------


def test_token_stats_by_brute_force(tiny_model, tokenizer):
    doc = "Madera, a bustling city, served as the backdrop."
    (got,) = document_token_stats(tiny_model, tokenizer, [doc])
    ids = tokenizer(doc, return_tensors="pt").input_ids
    with torch.no_grad():
        log_p = torch.log_softmax(tiny_model(ids).logits[0, :-1].double(), dim=-1)
    token = log_p.gather(-1, ids[0, 1:, None]).squeeze(-1)
    p = log_p.exp()
    mean = (p * log_p).sum(-1)
    std = torch.sqrt((p * (log_p - mean[:, None]) ** 2).sum(-1))
    np.testing.assert_allclose(got.log_probs, token.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.mean_log_probs, mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.std_log_probs, std.numpy(), atol=1e-4)
    assert len(got.log_probs) == ids.shape[1] - 1


def test_batched_losses_equal_one_at_a_time_on_real_docs(memorised_model, tokenizer, mia_docs):
    """The shared right-padded batch pass gives the task's `model(ids, labels=ids).loss` within 1e-5.

    A subset (12 members, 12 non-members, whole documents, 150-350 tokens each) keeps the test fast.
    """
    docs = mia_docs["member"][:12] + mia_docs["nonmember"][:12]
    memorised_model.train()
    batched = [s.loss for s in document_token_stats(memorised_model, tokenizer, docs, batch_size=5)]
    assert memorised_model.training
    single = document_losses_one_at_a_time(memorised_model, tokenizer, docs)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    lengths = [len(tokenizer(d)["input_ids"]) for d in docs]
    assert len(set(lengths)) > 1  # the batches really were padded


def test_score_mia_keys_and_values(memorised_model, tokenizer, mia_docs):
    members, nonmembers = mia_docs["member"][:8], mia_docs["nonmember"][:8]
    result = score_mia(memorised_model, tokenizer, members, nonmembers, batch_size=4, return_losses=True)
    assert set(result) == {
        "mia_loss_acc",
        "mia_loss_auc",
        "mia_final_score",
        "mia_zlib_auc",
        "mia_min_k_auc",
        "mia_min_k_plus_plus_auc",
        "mia_exposed_share",
        "mia_member_loss",
        "mia_nonmember_loss",
        "member_losses",
        "nonmember_losses",
    }
    single = document_losses_one_at_a_time(memorised_model, tokenizer, members + nonmembers)
    expected_auc = membership_auc(-np.array(single[:8]), -np.array(single[8:]))
    assert result["mia_loss_acc"] == pytest.approx(expected_auc)
    assert result["mia_loss_auc"] == result["mia_loss_acc"]
    assert result["mia_final_score"] == pytest.approx(1 - 2 * abs(expected_auc - 0.5))
    for key in ("mia_zlib_auc", "mia_min_k_auc", "mia_min_k_plus_plus_auc"):
        assert 0.0 <= result[key] <= 1.0
    np.testing.assert_allclose(result["member_losses"] + result["nonmember_losses"], single, atol=1e-5)


def test_too_short_documents_are_refused(tiny_model, tokenizer):
    with pytest.raises(ValueError):
        document_token_stats(tiny_model, tokenizer, ["a"])


def test_exposed_share_by_hand():
    nonmembers = [1.0, 2.0, 3.0, 4.0, 5.0]  # 5th percentile by linear interpolation: 1.0 + 0.05 * 4 * 1.0 = 1.2
    assert exposed_share([0.5, 1.1, 1.3, 6.0], nonmembers) == 0.5
    assert exposed_share([1.2], nonmembers) == 0.0  # strictly below
    assert exposed_share([0.1, 0.2], nonmembers, percentile=50) == 1.0
    with pytest.raises(ValueError):
        exposed_share([], nonmembers)
