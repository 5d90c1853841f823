"""Method "pre_finetuning_distill" (issue #28, item 6): the forget documents distilled toward the model from before
fine-tuning. The pure KL against a hand-written formula, the first step's loss against an independent computation,
the pre-fine-tuning model's checks, and a short run on a tiny memorised model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_unlearn import UnlearningTrainer
from hf_unlearn.losses import distill_kl
from hf_unlearn.support.tiny import tiny_causal_lm

from .test_anchored import documents, kl_to_the_disabled_adapter, whole_nll  # noqa: F401  (documents: the fixture)
from .test_trainer import lora, make_config


def test_distill_kl_is_the_forward_kl_from_the_base_at_the_answer_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, -100]])  # answer positions (0,0) (0,1) (0,2) (1,1)
    base = torch.randn(4, 6).log_softmax(-1)
    out = distill_kl(logits, base, labels)
    expected = torch.zeros(2, 3)
    for n, (b, t) in enumerate([(0, 0), (0, 1), (0, 2), (1, 1)]):
        p, logq = base[n].exp(), logits[b, t].log_softmax(-1)
        expected[b, t] = (p * (base[n] - logq)).sum()
    assert out.detach().flatten().tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-5)
    out.sum().backward()  # d/dz KL(p || softmax z) = softmax(z) - p at each answer position, 0 elsewhere
    assert logits.grad[0, 1].tolist() == pytest.approx((logits[0, 1].softmax(-1) - base[1].exp()).tolist(), abs=1e-5)
    assert logits.grad[1, 0].abs().sum() == 0
    assert distill_kl(base[None].detach(), base, torch.tensor([[0, 1, 2, 3, 4]])).abs().max() < 1e-5  # same: 0


def test_first_step_loss_equals_the_definition(memorised_model, tokenizer, documents, tmp_path):  # noqa: F811
    forget, _ = documents
    forget = forget[:4]
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    model = lora(memorised_model, nonzero=False)
    config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", retain_nll_weight=0.0,
                         distill_weight=2.0)
    kl, tokens = 0.0, 0
    with torch.no_grad():
        for text in forget:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logq = model(ids).logits[0, :-1].double().log_softmax(-1)
            logp = base(ids).logits[0, :-1].double().log_softmax(-1)
            kl += (logp.exp() * (logp - logq)).sum().item()
            tokens += ids.shape[1] - 1
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                processing_class=tokenizer, pre_finetuning_model=base)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert kl / tokens > 1.0  # the memorised model is far from a model that never saw the documents
    assert logged["distill_kl"] == pytest.approx(2.0 * kl / tokens, rel=1e-4)


def test_the_base_model_is_required_and_must_share_the_vocabulary(memorised_model, tokenizer, documents,  # noqa: F811
                                                                  tmp_path):
    forget, _ = documents
    config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", retain_nll_weight=0.0)
    build = lambda **kw: UnlearningTrainer(model=lora(copy.deepcopy(memorised_model)), args=config,  # noqa: E731
                                           forget_dataset=Dataset.from_dict({"text": forget}),
                                           processing_class=tokenizer, **kw)
    with pytest.raises(ValueError, match="pass pre_finetuning_model="):
        build()
    other = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    other.resize_token_embeddings(len(tokenizer) + 8)
    with pytest.raises(ValueError, match="pre_finetuning_model has a vocabulary of"):
        build(pre_finetuning_model=other)


def test_a_short_run_moves_the_forget_documents_to_the_base_models_view(
        memorised_model, memorised_rows, tokenizer, documents, tmp_path):  # noqa: F811
    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    memorise_rows = [r for r in memorised_rows["retain"]]
    model = lora(memorised_model, nonzero=False)
    before = np.mean(whole_nll(model, tokenizer, forget))
    base_level = np.mean(whole_nll(base, tokenizer, forget))
    retain_texts = [r["input"] + " " + r["output"] for r in memorise_rows]
    retain_before = np.mean(whole_nll(model, tokenizer, retain_texts))
    config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", max_steps=30,
                         learning_rate=3e-3,
                         lr_scheduler_type="constant", retain_nll_weight=1.0, retain_kl_weight=1.0)
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                retain_dataset=Dataset.from_list(memorise_rows), processing_class=tokenizer,
                                pre_finetuning_model=base)
    trainer.train()
    after = np.mean(whole_nll(model, tokenizer, forget))
    kls = [h["distill_kl"] for h in trainer.state.log_history if "distill_kl" in h]
    assert before < 1.0 and base_level > 5.0  # memorised; the untrained base predicts them badly
    assert after > before + 2.0  # the memorised documents have moved toward the base model's view of them
    assert kls[-1] < 0.5 * kls[0]
    retain_after = np.mean(whole_nll(model, tokenizer, retain_texts))
    print(before, after, base_level, retain_before, retain_after, kls)
    assert retain_after - retain_before < 0.25 * (after - before)  # selective: the retain rows move far less


def test_fixed_token_log_probs_and_the_level_target_by_hand():
    from hf_unlearn.losses import fixed_token_log_probs
    from hf_unlearn.methods.pre_finetuning_distill import PreFinetuningDistill

    torch.manual_seed(0)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, -100]])  # answer positions (0,0) (0,1) (0,2) (1,1)
    base = torch.randn(4, 6).log_softmax(-1)
    picked = fixed_token_log_probs(base, labels)
    expected = torch.tensor([[base[0, 1], base[1, 2], base[2, 3]], [0.0, base[3, 4], 0.0]])
    assert picked.flatten().tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-6)
    mask = labels[:, 1:].ne(-100).float()
    start, pre = torch.tensor([3.0, 3.4]), torch.tensor([2.8, 2.8])  # fine-tuning lifted the unseen level by 0.4
    target = PreFinetuningDistill.level_targets(base, labels, mask, start, pre)
    by_hand = [-(base[0, 1] + base[1, 2] + base[2, 3]).item() / 3 + 0.4, -base[3, 4].item() + 0.4]
    assert target.tolist() == pytest.approx(by_hand, abs=1e-6)


def test_the_level_needs_calibration_documents_and_pulls_to_its_target(memorised_model, tokenizer, documents,  # noqa: F811
                                                                       tmp_path):
    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    logged = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], unseen[:6], base, tmp_path,
                                             level_weight=1.0)
    # the first step's level term against the definition: the target from both models' whole-document NLLs
    model_nll = whole_nll(memorised_model, tokenizer, forget[:4])
    base_nll = whole_nll(base, tokenizer, forget[:4])
    shift = np.mean(whole_nll(memorised_model, tokenizer, unseen[:6])) - np.mean(whole_nll(base, tokenizer, unseen[:6]))
    expected = np.mean([(m - (b + shift)) ** 2 for m, b in zip(model_nll, base_nll)])
    assert logged["level_loss"] == pytest.approx(expected, rel=1e-3)
    assert logged["level_target"] == pytest.approx(np.mean(base_nll) + shift, rel=1e-4)


def test_the_hold_is_the_kl_to_the_model_before_unlearning_on_calibration_documents(
        memorised_model, tokenizer, documents, tmp_path):  # noqa: F811
    forget, unseen = documents
    calibration = unseen[:5]
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    model = lora(memorised_model, nonzero=True)  # adapter on != off from step 0, so the hold is not 0
    config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", retain_nll_weight=0.0,
                         level_weight=1.0, hold_weight=2.0, hold_batch=3, max_steps=1, reference="base")
    # the first step holds calibration documents 0, 1, 2
    expected = 2.0 * kl_to_the_disabled_adapter(model, tokenizer, calibration[:3])
    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_dict({"text": forget[:4]}),
                                processing_class=tokenizer, pre_finetuning_model=base,
                                calibration_dataset=Dataset.from_dict({"text": calibration}))
    trainer.train()
    logged = trainer.state.log_history[0]
    assert expected > 1e-4
    assert logged["calibration_hold"] == pytest.approx(expected.item(), rel=1e-3)
    assert "level_loss" in logged  # the level still reads the calibration documents' starting NLL
    with pytest.raises(ValueError, match="hold_batch"):
        make_config(tmp_path, method="pre_finetuning_distill", hold_weight=1.0, hold_batch=0)


def test_standardised_log_probs_and_lowest_k_mean_are_min_k_plus_plus_by_hand():
    """Min-K%++'s token values and document score as differentiable tensors, against the formula written out and the
    attack's own functions; the hand-derived backward against autograd's numerical check."""
    from hf_unlearn.losses import fixed_standardised_log_probs, lowest_k_mean, standardised_log_probs
    from hf_unlearn.metrics.mia.min_k import lowest_k_mean as metric_lowest_k_mean

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3, 4], [-100, -100, 5, 6, -100]])
    z, mask = standardised_log_probs(logits, labels)
    for b, t in [(0, 0), (0, 3), (1, 1), (1, 2)]:
        logp = logits[b, t].detach().log_softmax(-1)
        p = logp.exp()
        mu = (p * logp).sum()
        sigma = ((p * (logp - mu) ** 2).sum()).sqrt()
        assert z[b, t].item() == pytest.approx(((logp[labels[b, t + 1]] - mu) / sigma).item(), abs=1e-10)
    assert mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 0]] and z[1, 0] == 0 and z[1, 3] == 0
    assert torch.autograd.gradcheck(lambda x: standardised_log_probs(x, labels)[0], (logits,))
    index = labels[:, 1:].ne(-100).nonzero(as_tuple=True)
    fixed = fixed_standardised_log_probs(logits.detach()[index].log_softmax(-1), labels)
    assert fixed.flatten().tolist() == pytest.approx(z.detach().flatten().tolist(), abs=1e-6)
    for k in (0.2, 0.5, 1.0):
        scores = lowest_k_mean(z, mask, k)
        expected = [metric_lowest_k_mean(z[b][mask[b].bool()].detach().numpy(), k) for b in range(2)]
        assert scores.tolist() == pytest.approx(expected, abs=1e-12)
    assert lowest_k_mean(z, torch.zeros_like(mask), 0.2).tolist() == [0.0, 0.0]  # no tokens: 0
    # float32 where one token takes nearly all the mass: sigma stays positive and z finite, as in float64
    peaked = torch.tensor([[[30.0, 0.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])
    near = standardised_log_probs(peaked, torch.tensor([[-100, 1, 0]]))[0]
    exact = standardised_log_probs(peaked.double(), torch.tensor([[-100, 1, 0]]))[0]
    assert torch.isfinite(near).all() and near[0, 0].item() == pytest.approx(exact[0, 0].item(), rel=1e-3)
    assert near[0, 0] < -1e3  # the token the model is nearly sure is not next: far below its distribution
    with pytest.raises(ValueError, match="k must be"):
        lowest_k_mean(z, mask, 0.0)


def test_the_z_level_pulls_min_k_plus_plus_scores_to_the_base_models_plus_the_unseen_shift(
        memorised_model, tokenizer, documents, tmp_path):  # noqa: F811
    """The first step's z-level term against the definition, computed with the attack's own functions (whole
    documents, `document_token_stats`, `min_k_plus_plus_scores`) on the memorised model, the base model and the
    calibration documents."""
    from hf_unlearn.metrics.mia import document_token_stats
    from hf_unlearn.metrics.mia.min_k import lowest_k_mean
    from hf_unlearn.metrics.mia.min_k_plus_plus import standardised_log_probs

    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    logged = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], unseen[:6], base, tmp_path,
                                             z_level_weight=2.0, z_level_k=0.3)

    def score(model, docs):  # the attack's Min-K%++ score over values floored at -10, as the z-level takes it
        stats = document_token_stats(model, tokenizer, docs)
        return np.array([lowest_k_mean(np.maximum(standardised_log_probs(s), -10.0), 0.3) for s in stats])

    shift = score(memorised_model, unseen[:6]).mean() - score(base, unseen[:6]).mean()
    targets = score(base, forget[:4]) + shift
    expected = 2.0 * np.mean(np.sqrt(1 + (score(memorised_model, forget[:4]) - targets) ** 2) - 1)  # pseudo-Huber
    assert expected > 0.1
    assert logged["z_level_loss"] == pytest.approx(expected, rel=1e-3)
    assert logged["z_level_target"] == pytest.approx(targets.mean(), rel=1e-3)
    assert "level_loss" not in logged  # the NLL level is its own term
    for bad in ({"z_level_k": 0.0}, {"z_level_k": 1.5}, {"z_level_weight": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_config(tmp_path, method="pre_finetuning_distill", **bad)


def test_the_z_level_target_shifts_each_document_by_its_own_kinds_calibration_documents():
    from hf_unlearn.losses import fixed_standardised_log_probs, lowest_k_mean
    from hf_unlearn.methods.pre_finetuning_distill import PreFinetuningDistill

    torch.manual_seed(0)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, -100]])
    base = torch.randn(4, 6).log_softmax(-1)
    mask = labels[:, 1:].ne(-100).float()
    own = lowest_k_mean(fixed_standardised_log_probs(base, labels).clamp(min=-10), mask, 0.5)
    start, pre = torch.tensor([-3.0, -5.0, -9.0, -11.0, -2.0]), torch.tensor([-2.0, -2.0, -2.0, -2.0, -2.0])
    kinds = torch.tensor([0, 0, 1, 1, 2])  # shifts: kind 0 -2, kind 1 -8, kind 2 one document only
    target = PreFinetuningDistill.z_level_targets(base, labels, mask, 0.5, start, pre, kinds, torch.tensor([1, 0]))
    assert target.tolist() == pytest.approx([own[0].item() - 8.0, own[1].item() - 2.0], abs=1e-6)
    everything = (start - pre).mean().item()  # a kind with fewer than 2 documents, or no kinds: all of them
    target = PreFinetuningDistill.z_level_targets(base, labels, mask, 0.5, start, pre, kinds, torch.tensor([2, 2]))
    assert target.tolist() == pytest.approx((own + everything).tolist(), abs=1e-6)
    assert PreFinetuningDistill.z_level_targets(base, labels, mask, 0.5, start, pre).tolist() == pytest.approx(
        (own + everything).tolist(), abs=1e-6)


def _first_step_needing_calibration(memorised_model, tokenizer, forget, calibration, base, tmp_path, **fields):
    """The first step's log of pre_finetuning_distill with `fields` on `forget`; refused first without calibration
    documents (the levels need them), then run with `calibration`."""
    config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", retain_nll_weight=0.0,
                         max_steps=1, **fields)
    build = lambda **kw: UnlearningTrainer(model=lora(copy.deepcopy(memorised_model), nonzero=False),  # noqa: E731
                                           args=config, forget_dataset=Dataset.from_dict({"text": forget}),
                                           processing_class=tokenizer, pre_finetuning_model=base, **kw)
    with pytest.raises(ValueError, match="pass calibration_dataset="):
        build()
    trainer = build(calibration_dataset=Dataset.from_dict({"text": calibration}))
    trainer.train()
    return trainer.state.log_history[0]


def test_the_level_floor_lifts_only_the_targets_below_a_calibration_quantile(memorised_model, tokenizer, documents,  # noqa: F811
                                                                              tmp_path):
    """level_floor: each forget document's target is max(its pre-fine-tuning NLL + the shift, the calibration NLLs'
    level_floor quantile); the first step's level term against that, with the floor binding for some documents."""
    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    calibration = unseen[:6]
    model_nll = np.array(whole_nll(memorised_model, tokenizer, forget[:4]))
    base_nll = np.array(whole_nll(base, tokenizer, forget[:4]))
    calibration_nll = whole_nll(memorised_model, tokenizer, calibration)
    targets = base_nll + np.mean(calibration_nll) - np.mean(whole_nll(base, tokenizer, calibration))
    # the quantile whose value is nearest the targets' median, so that the floor binds for some documents, not all
    grid = np.linspace(0.01, 0.99, 981)
    quantile = float(grid[np.abs(np.quantile(calibration_nll, grid) - np.median(targets)).argmin()])
    floor = np.quantile(calibration_nll, quantile)
    assert (targets < floor).any() and (targets > floor).any()
    logged = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], calibration, base, tmp_path,
                                             level_weight=1.0, level_floor=quantile)
    lifted = np.maximum(targets, floor)
    assert logged["level_loss"] == pytest.approx(np.mean((model_nll - lifted) ** 2), rel=1e-3)
    assert logged["level_target"] == pytest.approx(lifted.mean(), rel=1e-4)
    assert logged["level_floored"] == pytest.approx(np.mean(targets < floor))
    # floor_skips_distill: the lifted documents' tokens carry no distillation; the others' KL per token of all four
    kl, tokens = _document_kls(lora(copy.deepcopy(memorised_model), nonzero=False), base, tokenizer, forget[:4])
    assert logged["distill_kl"] == pytest.approx(kl.sum() / tokens.sum(), rel=1e-4)
    skipped = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], calibration, base, tmp_path,
                                              level_weight=1.0, level_floor=quantile, floor_skips_distill=True)
    assert skipped["distill_kl"] == pytest.approx(kl[targets >= floor].sum() / tokens.sum(), rel=1e-4)
    assert skipped["level_loss"] == pytest.approx(logged["level_loss"], rel=1e-6)
    with pytest.raises(ValueError, match="level_floor"):
        make_config(tmp_path, method="pre_finetuning_distill", level_floor=1.0)
    with pytest.raises(ValueError, match="floor_skips_distill needs level_floor"):
        make_config(tmp_path, method="pre_finetuning_distill", floor_skips_distill=True)


def _document_kls(model, base, tokenizer, texts):
    """Each document's summed KL(base || model) over its next-token positions, and its number of positions."""
    kls, tokens = [], []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logq = model(ids).logits[0, :-1].double().log_softmax(-1)
            logp = base(ids).logits[0, :-1].double().log_softmax(-1)
            kls.append((logp.exp() * (logp - logq)).sum().item())
            tokens.append(ids.shape[1] - 1)
    return np.array(kls), np.array(tokens)


def test_the_level_band_pulls_each_nll_into_the_calibration_quantiles_from_both_sides(
        memorised_model, tokenizer, documents, tmp_path):  # noqa: F811
    """level_target="band": the first step's level term against the definition, each forget document's whole-document
    NLL against the 0.4-0.6 quantiles of the calibration documents' NLLs, both sides: two memorised documents (below
    the band) and two unseen ones given as forget documents (above it), one batch."""
    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    calibration, docs = unseen[:6], forget[:2] + unseen[6:8]
    low, high = np.quantile(whole_nll(memorised_model, tokenizer, calibration), [0.4, 0.6])
    nll = np.array(whole_nll(memorised_model, tokenizer, docs))
    assert (nll[:2] < low).all() and (nll[2:] > high).all()
    logged = _first_step_needing_calibration(memorised_model, tokenizer, docs, calibration, base, tmp_path,
                                             level_weight=2.0, level_target="band", z_band_low=0.4, z_band_high=0.6)
    expected = 2.0 * np.mean(np.maximum(low - nll, 0) ** 2 + np.maximum(nll - high, 0) ** 2)
    assert logged["level_loss"] == pytest.approx(expected, rel=1e-3)
    assert logged["level_target"] == pytest.approx((low + high) / 2, rel=1e-4)
    with pytest.raises(ValueError, match="level_target"):
        make_config(tmp_path, method="pre_finetuning_distill", level_target="mean")


def test_the_current_shift_reads_the_calibration_documents_under_the_model_of_the_step(
        memorised_model, tokenizer, documents, tmp_path):  # noqa: F811
    """level_shift="current": before each step, hold_batch calibration documents are measured again under the current
    model, and the level's target reads those values (the start-measured run's target stays where it was)."""
    from transformers import TrainerCallback

    forget, unseen = documents
    calibration = unseen[:4]
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    seen = {}

    class AfterFirstStep(TrainerCallback):  # the calibration documents' NLL under the model that step 2 starts from
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                seen["nll"] = np.mean(whole_nll(model, tokenizer, calibration))
                model.train()

    def second_step(shift):
        config = make_config(tmp_path, method="pre_finetuning_distill", forget_unit="documents", max_steps=2,
                             retain_nll_weight=0.0, level_weight=1.0, z_level_weight=1.0, level_shift=shift,
                             hold_batch=len(calibration), learning_rate=5e-2)
        trainer = UnlearningTrainer(model=lora(copy.deepcopy(memorised_model), nonzero=False), args=config,
                                    forget_dataset=Dataset.from_dict({"text": forget[:4]}), processing_class=tokenizer,
                                    pre_finetuning_model=base, calibration_dataset=Dataset.from_dict(
                                        {"text": calibration}), callbacks=[AfterFirstStep()])
        trainer.train()
        return trainer, trainer.state.log_history[1]

    trainer, logged = second_step("current")
    shift = seen["nll"] - np.mean(whole_nll(base, tokenizer, calibration))
    expected = np.mean(whole_nll(base, tokenizer, forget[:4])) + shift
    assert logged["level_target"] == pytest.approx(expected, rel=1e-4)
    levels = trainer.calibration
    assert not torch.allclose(levels.values_min_k, levels.start_min_k)  # the Min-K%++ scores re-measured too
    assert levels.state()["attributes"]["values_min_k"] == levels.values_min_k.tolist()  # and kept in checkpoints
    _, fixed = second_step("start")
    assert abs(fixed["level_target"] - logged["level_target"]) > 1e-3  # the step moved the calibration documents
    with pytest.raises(ValueError, match="level_shift"):
        make_config(tmp_path, method="pre_finetuning_distill", level_shift="later")


def test_the_z_band_is_the_calibration_quartiles_of_each_documents_kind():
    from hf_unlearn.methods.pre_finetuning_distill import PreFinetuningDistill

    scores = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -9.0, -8.0, -7.0, -6.0])
    kinds = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    low, high = PreFinetuningDistill.band(scores, kinds, torch.tensor([1, 0, 2]), 3)
    # kind 1: -9 -8 -7 -6 -> quartiles at positions 0.75 and 2.25; kind 0: -5..-1 -> -4, -2; kind 2 (none): all 9
    assert low.tolist() == pytest.approx([-8.25, -4.0, np.quantile(scores.numpy(), 0.25)])
    assert high.tolist() == pytest.approx([-6.75, -2.0, np.quantile(scores.numpy(), 0.75)])
    low, high = PreFinetuningDistill.band(scores, None, None, 2)  # kinds not known: every document
    assert low.tolist() == pytest.approx([np.quantile(scores.numpy(), 0.25)] * 2)
    # a narrower band: kind 0's 0.4 and 0.6 quantiles (positions 1.6 and 2.4 of -5..-1)
    low, high = PreFinetuningDistill.band(scores, kinds, torch.tensor([0]), 1, (0.4, 0.6))
    assert (low.item(), high.item()) == pytest.approx((-3.4, -2.6))


def test_the_z_band_pulls_only_scores_outside_the_calibration_quartiles(memorised_model, tokenizer, documents,
                                                                       tmp_path):  # noqa: F811
    """z_level_target="band": the first step's term against the definition, each forget document's Min-K%++ score
    (the attack's own functions) against the quartiles of the calibration documents' scores, both sides."""
    from hf_unlearn.metrics.mia import document_token_stats
    from hf_unlearn.metrics.mia.min_k import lowest_k_mean
    from hf_unlearn.metrics.mia.min_k_plus_plus import standardised_log_probs

    forget, unseen = documents
    base = tiny_causal_lm(tokenizer, arch="olmo", seed=1)
    logged = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], unseen[:6], base, tmp_path,
                                             z_level_weight=2.0, z_level_k=0.3, z_level_target="band")

    def score(docs):
        stats = document_token_stats(memorised_model, tokenizer, docs)
        return np.array([lowest_k_mean(np.maximum(standardised_log_probs(s), -10.0), 0.3) for s in stats])

    low, high = np.quantile(score(unseen[:6]), [0.25, 0.75])
    mine = score(forget[:4])
    distance = np.maximum(low - mine, 0) + np.maximum(mine - high, 0)
    assert distance.max() > 0.1  # the memorised documents are outside the unseen documents' band
    assert logged["z_level_loss"] == pytest.approx(2.0 * np.mean(np.sqrt(1 + distance ** 2) - 1), rel=1e-3)
    with pytest.raises(ValueError, match="z_level_target"):
        make_config(tmp_path, method="pre_finetuning_distill", z_level_target="mean")
    with pytest.raises(ValueError, match="z_band_low and z_band_high"):
        make_config(tmp_path, method="pre_finetuning_distill", z_band_low=0.7, z_band_high=0.6)
    # a narrower band: the same step's term against its quantiles
    logged = _first_step_needing_calibration(memorised_model, tokenizer, forget[:4], unseen[:6], base, tmp_path,
                                             z_level_weight=2.0, z_level_k=0.3, z_level_target="band",
                                             z_band_low=0.4, z_band_high=0.6)
    low, high = np.quantile(score(unseen[:6]), [0.4, 0.6])
    distance = np.maximum(low - mine, 0) + np.maximum(mine - high, 0)
    assert logged["z_level_loss"] == pytest.approx(2.0 * np.mean(np.sqrt(1 + distance ** 2) - 1), rel=1e-3)
