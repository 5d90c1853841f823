"""Forgetting to the unseen level (issue #28): the anchored loss against hand-written formulas, the method's first
step against an independent computation from the model's own loss, whole documents as the forget stream, and, on a
tiny memorised model, a run that lifts the forget documents into the unseen range and a stopping rule that stops
and restores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_unlearn import UnlearningTrainer, UnseenLevelStoppingCallback
from hf_unlearn.calibration import CalibrationLevels, cycle_indices, documents_nll
from hf_unlearn.data import rows_to_documents, rows_to_units, tokenize_document, tokenize_documents
from hf_unlearn.losses import band_loss, empirical_quantiles, quantile_matching_loss

from .conftest import short_rows
from .test_trainer import lora, make_config


# ---- the pure loss functions -------------------------------------------------------------------------------------

def test_band_loss_both_sides_and_inside():
    nll = torch.tensor([1.0, 2.5, 3.0, 4.0, 6.5])
    # low 2.0, high 4.0: 1.0 is 1 below (1^2), 6.5 is 2.5 above (2.5^2), the rest inside or on an edge (0)
    assert band_loss(nll, 2.0, 4.0).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 6.25])
    nll = torch.tensor([1.0, 6.5], requires_grad=True)
    band_loss(nll, 2.0, 4.0).sum().backward()
    assert nll.grad.tolist() == pytest.approx([-2.0, 5.0])  # up from below, down from above: 2 (x - edge)


def test_empirical_quantiles_match_numpy():
    values = torch.tensor([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    probs = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    expected = np.quantile(values.numpy(), probs.numpy())
    assert empirical_quantiles(values, probs).tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_quantile_matching_pulls_the_kth_smallest_to_the_calibration_quantile():
    calibration = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0])
    nll = torch.tensor([0.5, 7.0, 1.0, 3.0])  # ranks 0, 3, 1, 2 -> probs 1/8, 7/8, 3/8, 5/8
    targets = [np.quantile(calibration.numpy(), p) for p in (1 / 8, 7 / 8, 3 / 8, 5 / 8)]  # 2.5, 5.5, 3.5, 4.5
    expected = [(x - t) ** 2 for x, t in zip(nll.tolist(), targets)]
    assert quantile_matching_loss(nll, calibration).tolist() == pytest.approx(expected)
    # documents already spread over the unseen quantiles cost nothing
    assert quantile_matching_loss(torch.tensor(targets), calibration).tolist() == pytest.approx([0.0] * 4, abs=1e-6)


def test_each_document_is_held_against_the_unseen_level_of_its_own_kind():
    from hf_unlearn.methods.anchored import AnchoredArguments, Anchored

    method = Anchored(AnchoredArguments())  # band 0.25-0.75
    calibration = torch.tensor([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 5.0])
    calibration_group = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    nll = torch.tensor([0.5, 9.0, 2.0, 0.0])
    forget_group = torch.tensor([0, 1, 0, 2])
    # kind 0: band [1.5, 2.5] -> 1.0^2 and 0; kind 1: [10.5, 11.5] -> 1.5^2; kind 2 has one calibration document, so
    # it is held against all seven: [2.5, 10.5] -> 2.5^2
    assert method.per_document(nll, calibration, calibration_group, forget_group).tolist() == pytest.approx(
        [1.0, 2.25, 0.0, 6.25])
    # without kinds, every document against all calibration documents
    assert method.per_document(nll, calibration, None, None).tolist() == pytest.approx([4.0, 0.0, 0.25, 6.25])


def test_start_levels_read_the_band_from_the_model_before_unlearning():
    from hf_unlearn.methods import StepContext, StepCounts
    from hf_unlearn.methods.anchored import Anchored, AnchoredArguments

    # two forget documents of mean NLL 1.0 and 3.0 (one token each); the unseen level was 2.0-4.0 at the start and
    # has since risen to 5.0-7.0
    logp = torch.tensor([[-1.0], [-3.0]])
    ctx = StepContext(counts=StepCounts(torch.tensor([2.0, 1.0, 2.0, 1.0])), forget_labels=torch.zeros(2, 2).long(),
                      forget_logits=torch.zeros(2, 1, 4), forget_logp=logp, forget_mask=torch.ones(2, 1),
                      forget_nll=torch.tensor(2.0), calibration_nll=torch.tensor([5.0, 7.0]),
                      calibration_start=torch.tensor([2.0, 4.0]))
    band = dict(anchor_low_quantile=0.0, anchor_high_quantile=1.0, anchor_hold_weight=0.0)
    start = Anchored(AnchoredArguments(anchor_levels="start", **band))
    current = Anchored(AnchoredArguments(anchor_levels="current", **band))
    assert start.loss(ctx).item() == pytest.approx((1.0 ** 2 + 0.0) / 2)  # 1.0 is 1 below 2.0; 3.0 is inside
    assert current.loss(ctx).item() == pytest.approx((4.0 ** 2 + 2.0 ** 2) / 2)  # both below 5.0
    with pytest.raises(ValueError, match="anchor_levels"):
        Anchored(AnchoredArguments(anchor_levels="end")).check()


# ---- documents as the forget stream --------------------------------------------------------------------------------

def test_rows_group_into_documents_by_id_and_questions_become_texts():
    rows = [{"id": "7sc1", "input": "A is", "output": "B."}, {"id": "7qa0", "input": "Who?", "output": "A."},
            {"id": "8sc1", "input": "C", "output": "D."}, {"id": "7sc2", "input": "E", "output": "F."}]
    assert rows_to_documents(rows) == ["A is B. E F.", "C D.", "Who? A."]
    assert rows_to_documents(rows, questions=False) == ["A is B. E F.", "C D."]
    rows[2]["task"] = "Task3"
    assert [g for _, g in rows_to_units(rows)] == ["rows/document", "Task3/document", "rows/question"]


def test_a_document_is_tokenised_as_the_attack_scores_it_and_cut_into_windows(tokenizer):
    text = "Mario Rossi was born in Pisa on 3 March 1970 and works as a baker in Lucca."
    ids = tokenizer(text)["input_ids"]
    whole = tokenize_document(tokenizer, text)
    assert whole == [{"input_ids": ids, "labels": ids}]  # every token carries loss, no EOS added
    windows = tokenize_document(tokenizer, text, max_length=4)
    assert [w["input_ids"] for w in windows] == [ids[i:i + 4] for i in range(0, len(ids), 4) if len(ids[i:i + 4]) > 1]
    with pytest.raises(ValueError, match="document 2 has fewer than 2 tokens"):
        tokenize_documents([text, "a"], tokenizer, "calibration", 64)


def test_documents_nll_is_the_models_own_loss(memorised_model, tokenizer, lume_rows):
    texts = [r["input"] + " " + r["output"] for r in short_rows(lume_rows["forget_train"], n=3)]
    features = tokenize_documents(texts, tokenizer, "docs", 512)
    ours = documents_nll(memorised_model, features, tokenizer.pad_token_id, batch_size=2)
    with torch.no_grad():
        theirs = [memorised_model(torch.tensor([f["input_ids"]]), labels=torch.tensor([f["input_ids"]])).loss.item()
                  for f in features]
    assert ours.tolist() == pytest.approx(theirs, rel=1e-4)
    assert cycle_indices(3, 2, 5) == [1, 2] and cycle_indices(0, 9, 3) == [0, 1, 2]


# ---- the method in the trainer -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def documents(lume_rows):
    """Forget texts the memorised model saw (its forget rows), unseen texts of the same kind (other Task2 rows)."""
    seen = short_rows(lume_rows["forget_train"], n=8)
    unseen = short_rows(lume_rows["forget_train"], n=24)[8:]
    text = lambda r: r["input"] + " " + r["output"]  # noqa: E731
    return [text(r) for r in seen], [text(r) for r in unseen]


def whole_nll(model, tokenizer, texts) -> list[float]:
    """Each text's loss as the task's attack computes it: `model(ids, labels=ids).loss`."""
    model.eval()
    with torch.no_grad():
        return [model(ids := tokenizer(t, return_tensors="pt").input_ids, labels=ids).loss.item() for t in texts]


def kl_to_the_disabled_adapter(model, tokenizer, texts) -> torch.Tensor:
    """The mean over `texts` of each one's token mean of sum_v p(v) (log p(v) - log p_ref(v)), p_ref being the model
    with its adapter disabled: the calibration hold by hand."""
    model.eval()
    per_text = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            with model.disable_adapter():
                ref = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            per_text.append((logp.exp() * (logp - ref)).sum(-1).mean())
    return torch.stack(per_text).mean()


def test_first_step_loss_equals_the_definition(memorised_model, memorised_rows, tokenizer, documents, tmp_path):
    forget, unseen = documents
    forget, calibration = forget[:4], unseen[:6]
    retain = memorised_rows["retain"][:4]
    model = lora(memorised_model, nonzero=False)
    config = make_config(tmp_path, method="anchored", forget_unit="documents", retain_nll_weight=0.5,
                         anchor_weight=2.0, anchor_low_quantile=0.2, anchor_high_quantile=0.9,
                         anchor_calibration_batch=3, anchor_hold_weight=1.0)
    nll_f = torch.tensor(whole_nll(model, tokenizer, forget), dtype=torch.float64)
    low, high = np.quantile(whole_nll(model, tokenizer, calibration), [0.2, 0.9])
    anchor = (torch.relu(low - nll_f) ** 2 + torch.relu(nll_f - high) ** 2).mean()
    retain_nll = []  # the retain answers' mean token NLL (rows, not documents)
    with torch.no_grad():
        for r in retain:
            prompt = tokenizer(r["input"])["input_ids"]
            answer = tokenizer(r["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1].double()
            retain_nll.append(-torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer)[:, None]))
    expected = 2.0 * anchor + 0.5 * torch.cat(retain_nll).mean()  # the hold is 0 at step 0: nothing moved yet
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                retain_dataset=Dataset.from_list(retain), processing_class=tokenizer,
                                calibration_dataset=calibration)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert anchor > 1.0  # the memorised documents start far below the unseen band
    assert logged["loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert logged["calibration_hold"] == pytest.approx(0.0, abs=1e-8)
    assert logged["forget_document_nll"] == pytest.approx(nll_f.mean().item(), rel=1e-4)


def test_the_kl_hold_is_the_token_kl_to_the_model_before_unlearning(memorised_model, tokenizer, documents,
                                                                     tmp_path):
    forget, unseen = documents
    calibration = unseen[:5]
    # adapter on != adapter off from step 0, and the reference is the adapter disabled: the hold is not 0
    model = lora(memorised_model, nonzero=True)
    config = make_config(tmp_path, method="anchored", forget_unit="documents", retain_nll_weight=0.0,
                         anchor_calibration_batch=3, anchor_hold="kl", anchor_hold_weight=2.0, reference="base")
    # the first step holds calibration documents 0, 1, 2
    expected = 2.0 * kl_to_the_disabled_adapter(model, tokenizer, calibration[:3])
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget[:4]}),
                                processing_class=tokenizer, calibration_dataset=calibration)
    trainer.train()
    assert expected > 1e-4
    assert trainer.state.log_history[0]["calibration_hold"] == pytest.approx(expected.item(), rel=1e-3)
    with pytest.raises(ValueError, match="anchor_hold"):
        make_config(tmp_path, method="anchored", anchor_hold="logits")


def test_anchored_needs_calibration_documents_and_a_valid_band(memorised_model, tokenizer, documents, tmp_path):
    forget, _ = documents
    with pytest.raises(ValueError, match="calibration_dataset="):
        UnlearningTrainer(model=lora(memorised_model), args=make_config(tmp_path, method="anchored",
                                                                        forget_unit="documents", retain_nll_weight=0),
                          forget_dataset=Dataset.from_dict({"text": forget}), processing_class=tokenizer)
    with pytest.raises(ValueError, match="anchor_low_quantile"):
        make_config(tmp_path, method="anchored", anchor_low_quantile=0.8, anchor_high_quantile=0.2)


def test_a_short_run_lifts_the_forget_documents_into_the_unseen_range_and_stops(
        memorised_model, memorised_rows, tokenizer, documents, tmp_path):
    forget, unseen = documents
    calibration, evaluation = unseen[:8], unseen[8:]
    model = lora(memorised_model, nonzero=False)
    before = np.mean(whole_nll(model, tokenizer, forget))
    config = make_config(tmp_path, method="anchored", forget_unit="documents", max_steps=60, learning_rate=3e-3,
                         lr_scheduler_type="constant", retain_nll_weight=1.0, retain_kl_weight=1.0)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                retain_dataset=Dataset.from_list(memorised_rows["retain"]), processing_class=tokenizer,
                                calibration_dataset=calibration)
    stop = UnseenLevelStoppingCallback(trainer, forget, calibration, every_n_steps=2, auc_band=0.15)
    trainer.add_callback(stop)
    trainer.train()
    after = whole_nll(model, tokenizer, forget)
    # the range of every unseen document: 8 of them alone are a lumpy sample (on one machine the 8 evaluation
    # documents all sat at 6.9-8.3 while the calibration ones spread over 4.0-7.4, the members ending at 5.5)
    unseen_after = whole_nll(model, tokenizer, calibration + evaluation)
    assert before < 1.0  # memorised
    assert stop.stopped and "AUC" in stop.stopped and trainer.state.global_step < 60  # stopped on the AUC
    assert abs(stop.best["unseen/auc"] - 0.5) <= 0.15
    # in the unseen range: not remembered, not pushed far past it
    low, high = np.quantile(unseen_after, [0.0, 1.0])
    assert low - 0.5 < np.mean(after) < high + 0.5, (np.mean(after), low, high)
    assert {"unseen/auc", "unseen/forget_nll", "unseen/calibration_nll"} <= set(
        k for entry in trainer.state.log_history for k in entry)


def test_the_stopping_rule_restores_the_best_state(memorised_model, memorised_rows, tokenizer, documents, tmp_path):
    forget, unseen = documents
    model = lora(memorised_model, nonzero=False)
    # Plain gradient ascent at a high rate overshoots the unseen level; auc_band 0 never stops, so the last state is
    # not the best one and the best must be put back.
    config = make_config(tmp_path, method="ga", forget_unit="documents", max_steps=16, learning_rate=1e-2,
                         lr_scheduler_type="constant")
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                processing_class=tokenizer)
    stop = UnseenLevelStoppingCallback(trainer, forget, unseen[:8], every_n_steps=2, auc_band=0.0)
    trainer.add_callback(stop)
    trainer.train()
    aucs = [h["unseen/auc"] for h in stop.history]
    assert stop.stopped is None and stop.history[-1]["step"] == 16
    assert aucs[0] > 0.9 and min(aucs) < 0.5  # from remembered to overshot
    assert stop.best["step"] != 16 and abs(stop.best["unseen/auc"] - 0.5) == min(abs(a - 0.5) for a in aucs)
    assert stop.measure()["unseen/auc"] == pytest.approx(stop.best["unseen/auc"])  # the best state is back


def test_an_attack_that_never_moves_keeps_the_last_state(memorised_model, memorised_rows, tokenizer, documents,
                                                         tmp_path):
    """Ties go to the later state: NPO at a small rate forgets a little but leaves the AUC at 1.0 at every check, and
    restoring the first of equal checks would put back the model from before unlearning."""
    forget, unseen = documents
    model = lora(memorised_model, nonzero=False)  # the adapter starts at zero: the start is the model before
    config = make_config(tmp_path, method="npo", forget_unit="documents", max_steps=4, learning_rate=1e-4,
                         retain_nll_weight=0.0, lr_scheduler_type="constant")
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                processing_class=tokenizer)
    stop = UnseenLevelStoppingCallback(trainer, forget, unseen[:8], every_n_steps=2, auc_band=0.0)
    trainer.add_callback(stop)
    trainer.train()
    assert [h["unseen/auc"] for h in stop.history] == [1.0, 1.0, 1.0]
    assert stop.best["step"] == 4
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # not sent back to zero


def test_calibration_levels_are_saved_with_the_checkpoint(memorised_model, memorised_rows, tokenizer, documents,
                                                          tmp_path):
    forget, unseen = documents
    config = make_config(tmp_path, method="anchored", forget_unit="documents", max_steps=2, save_strategy="steps",
                         save_steps=2, retain_nll_weight=0.0)
    trainer = UnlearningTrainer(model=lora(memorised_model, nonzero=False), args=config,
                                forget_dataset=Dataset.from_dict({"text": forget[:4]}), processing_class=tokenizer,
                                calibration_dataset=unseen[:5])
    trainer.train()
    saved = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    attributes = saved["stateful_callbacks"]["CalibrationLevels"]["attributes"]
    assert attributes["values"] == pytest.approx(trainer.calibration.values.tolist())
    fresh = CalibrationLevels(trainer.calibration.features, 4)
    assert fresh.load_from_checkpoint(str(tmp_path / "out" / "checkpoint-2"))
    assert torch.equal(fresh.values, trainer.calibration.values) and torch.equal(fresh.start, trainer.calibration.start)
    fingerprint = json.loads((tmp_path / "out" / "checkpoint-2" / "unlearning_fingerprint.json").read_text())
    assert fingerprint["calibration"]  # resuming with other calibration documents is refused


def test_the_retain_guard_waits_for_its_patience(tokenizer):
    """A retain rise that passes (unlearning often lifts the retain NLL for a few steps) stops training only at
    `retain_patience` checks in a row over the bound; a state over the bound is never kept as the best."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    net = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(processing_class=tokenizer, args=SimpleNamespace(max_length=64), model=net,
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m), log=lambda values: None)
    docs = ["one short document", "another short text", "a third one"]

    def run(patience, retain):
        stop = UnseenLevelStoppingCallback(trainer, docs[:1], docs[1:], docs, every_n_steps=1, auc_band=0.0,
                                           max_retain_rise=0.5, retain_patience=patience)
        script = iter(retain)
        stop.measure = lambda: {"unseen/auc": 0.9, "unseen/forget_nll": 1.0, "unseen/calibration_nll": 2.0,
                                "unseen/retain_nll": next(script)}
        state, control = TrainerState(), TrainerControl()
        for step in range(len(retain)):
            state.global_step = step
            stop._check(state, control)
            if control.should_training_stop:
                return step, stop
        return None, stop

    rises = [0.3, 1.0, 0.5, 1.0, 1.0, 0.4]
    assert run(1, rises)[0] == 1  # the first check over the bound
    step, stop = run(2, rises)
    assert step == 4 and "at 2 checks in a row" in stop.stopped
    assert stop.best["unseen/retain_nll"] <= 0.8  # the kept state was within the bound
    assert run(3, rises)[0] is None
    with pytest.raises(ValueError, match="retain_patience"):
        UnseenLevelStoppingCallback(trainer, docs[:1], docs[1:], retain_patience=0)
