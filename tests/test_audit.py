"""The audit's attacks and probes, each on its own: quantization properties, teacher-forced memorization metrics,
probe rows, the document split, and a relearning attack on a tiny model that memorised real LUME rows."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_unlearn.audit import (
    RelearnConfig,
    exact_memorization,
    extraction_strength,
    memorization_scores,
    paraphrase_rows,
    prefix_rows,
    quantization_scales,
    quantize_model,
    quantize_weight,
    relearn,
    split_documents,
)
from hf_unlearn.audit.run import attack_verdict, audit_plot, judge, probe_verdict
from hf_unlearn.support.tiny import tiny_causal_lm

# ---- quantization ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,group", [(4, 128), (8, None), (4, 48)])
def test_quantization_is_idempotent_and_moves_each_weight_by_at_most_half_a_step(bits, group):
    torch.manual_seed(0)
    w = torch.randn(16, 300) * torch.linspace(0.01, 2, 300)  # columns of very different sizes
    q = quantize_weight(w, bits, group)
    size = 300 if group is None else group
    step = quantization_scales(w, bits, group).repeat_interleave(size, dim=1)[:, :300]
    assert torch.all((q - w).abs() <= step / 2 + 1e-7)
    assert torch.allclose(quantize_weight(q, bits, group), q, rtol=0, atol=1e-6)
    # at most 2^bits levels per (row, group), and the grid's ends are reached by the largest weight
    levels = (q / step).round()
    assert levels.abs().max() == 2 ** (bits - 1) - 1
    assert len(torch.unique(levels[0, :size])) <= 2**bits
    assert not torch.equal(q, w)


def test_a_small_delta_that_crosses_no_rounding_boundary_is_erased():
    torch.manual_seed(1)
    w = quantize_weight(torch.randn(8, 256), 4, 128)  # on the grid: every weight sits at a level
    step = quantization_scales(w, 4, 128).repeat_interleave(128, dim=1)
    delta = (torch.rand_like(w) - 0.5) * 0.8 * step  # |delta| < 0.4 s: no element reaches a boundary at s/2
    delta[w.abs() >= step * 7 - 1e-6] = 0  # the weights that set each group's scale (level +-7) unchanged
    assert torch.allclose(quantize_weight(w + delta, 4, 128), quantize_weight(w, 4, 128), atol=1e-6)
    # ... and a delta of a full step is not erased
    assert not torch.allclose(quantize_weight(w + step * 0.9 * torch.sign(delta), 4, 128), w, atol=1e-6)


def test_zero_groups_stay_zero_and_bad_arguments_are_refused():
    w = torch.zeros(2, 8)
    w[1, 4:] = torch.tensor([1.0, -0.5, 0.25, 0.0])
    q = quantize_weight(w, 4, 4)
    assert torch.equal(q[0], torch.zeros(8)) and torch.equal(q[1, :4], torch.zeros(4))
    for kwargs, text in ((dict(bits=1), "bits"), (dict(group_size=0), "group_size")):
        with pytest.raises(ValueError, match=text):
            quantize_weight(w, **{"bits": 4, **kwargs})
    with pytest.raises(ValueError, match="2-D"):
        quantize_weight(torch.zeros(3), 4)


def test_int8_per_channel_matches_optimum_quanto_and_int4_is_as_close_as_its_affine_groups():
    import optimum.quanto as quanto  # a dev dependency: installs and runs on CPU
    from optimum.quanto.tensor.optimizers import AbsmaxOptimizer, MaxOptimizer
    from optimum.quanto.tensor.weights.quantization import quantize_weight as quanto_weight

    torch.manual_seed(2)
    w = torch.randn(32, 256)
    scale = AbsmaxOptimizer()(w, qtype=quanto.qint8, axis=0)
    theirs = quanto_weight(w, quanto.qint8, axis=0, scale=scale, optimized=False).dequantize()
    assert torch.allclose(quantize_weight(w, 8, None), theirs, atol=1e-6)
    scale, shift = MaxOptimizer()(w, qtype=quanto.qint4, axis=0, group_size=128)
    theirs4 = quanto_weight(w, quanto.qint4, axis=0, scale=scale, shift=shift, group_size=128,
                            optimized=False).dequantize()
    ours, their_error = (quantize_weight(w, 4, 128) - w).abs().mean(), (theirs4 - w).abs().mean()
    # symmetric int4 has 15 usable levels where affine has 16 over a tighter range: the same order of error
    assert 0.8 * their_error < ours < 1.6 * their_error


def test_quantize_model_rounds_every_linear_but_the_output_layer(tokenizer):
    model = tiny_causal_lm(tokenizer, arch="llama", seed=0)
    before = copy.deepcopy(model.state_dict())
    names = quantize_model(model, "int4")
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert names == [n for n in linears if n != "lm_head"] and names
    after = model.state_dict()
    for name in names:
        assert not torch.equal(after[f"{name}.weight"], before[f"{name}.weight"]), name
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'; known: int8, int4"):
        quantize_model(model, "int3")
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(tiny_causal_lm(tokenizer, arch="llama", seed=0), LoraConfig(target_modules="all-linear"))
    with pytest.raises(ValueError, match="merge the LoRA adapter"):
        quantize_model(peft, "int8")


# ---- memorization metrics ----------------------------------------------------------------------------------------


def test_exact_memorization_and_extraction_strength_by_hand():
    answer = [5, 6, 7, 8]
    assert exact_memorization([5, 6, 7, 8], answer) == 1.0 and extraction_strength([5, 6, 7, 8], answer) == 1.0
    assert exact_memorization([0, 6, 7, 8], answer) == 0.75
    assert extraction_strength([0, 6, 7, 8], answer) == 0.75  # knowing the first token gives the rest
    assert extraction_strength([5, 6, 7, 0], answer) == 0.0  # the last token is wrong: nothing is extracted
    assert extraction_strength([5, 0, 7, 8], answer) == 0.5
    with pytest.raises(ValueError):
        exact_memorization([], [])


def test_teacher_forced_scores_tell_a_memorised_model_from_a_fresh_one(memorised_model, tiny_model, tokenizer,
                                                                        memorised_rows):
    rows = memorised_rows["forget"]
    seen = memorization_scores(memorised_model, tokenizer, rows, batch_size=3)
    fresh = memorization_scores(tiny_model, tokenizer, rows, batch_size=3)
    assert seen["exact_memorization"] > 0.9 and seen["extraction_strength"] > 0.5
    assert fresh["exact_memorization"] < 0.2 and fresh["extraction_strength"] < 0.2
    # batching does not change the result (right padding, masked)
    one = memorization_scores(memorised_model, tokenizer, rows, batch_size=1)
    assert one == pytest.approx(seen)


# ---- probes and the document split -------------------------------------------------------------------------------


def test_prefix_rows_cut_sentence_completion_prompts_and_move_the_rest_to_the_answer():
    rows = [{"id": "doc1sc1", "input": "one two three four", "output": "five six"},
            {"id": "doc1qa1", "input": "What is it?", "output": "a test"}]
    half = prefix_rows(rows, 0.5)
    assert half == [{"id": "doc1sc1", "input": "one two", "output": "three four five six"}]
    assert prefix_rows(rows, 0.1)[0]["input"] == "one"
    with pytest.raises(ValueError):
        prefix_rows(rows, 0)


def test_paraphrase_rows_use_tofu_paraphrased_questions_or_a_paraphrased_input():
    rows = [{"input": "Q?", "output": "A", "paraphrased_question": "Asked otherwise?"},
            {"input": "Q2?", "output": "B", "paraphrased_input": "Q2 again?"}, {"input": "Q3?", "output": "C"}]
    assert [(r["input"], r["output"]) for r in paraphrase_rows(rows)] == [("Asked otherwise?", "A"),
                                                                        ("Q2 again?", "B")]


def test_split_documents_keeps_each_document_whole(lume_rows):
    rows = lume_rows["forget_train"][:40]
    seen, unseen = split_documents(rows, 0.5, seed=0)
    stem = lambda r: r["id"][:-3]  # noqa: E731
    assert seen and unseen and len(seen) + len(unseen) == len(rows)
    assert not {stem(r) for r in seen} & {stem(r) for r in unseen}
    assert split_documents(rows, 0.5, seed=0) == (seen, unseen)
    with pytest.raises(ValueError, match="at least 2 forget documents"):
        split_documents(rows[:1], 0.5)


def test_verdicts_read_the_share_that_comes_back():
    assert "does not survive 4-bit" in attack_verdict("int4", 0.9, 0.3, 0.8)[1]
    assert attack_verdict("int4", 0.9, 0.3, 0.8)[0] == pytest.approx(5 / 6)
    assert "survives 8-bit" in attack_verdict("int8", 0.9, 0.3, 0.31)[1]
    assert "brings back part" in attack_verdict("relearn", 0.9, 0.3, 0.5)[1]
    assert "nothing measurable was forgotten" in attack_verdict("int4", 0.9, 0.88, 0.9)[1]
    assert "holds" in probe_verdict("prefix50", 0.8, 0.2, 0.9, 0.3)[1]
    assert "weaker" in probe_verdict("prefix25", 0.8, 0.6, 0.9, 0.3)[1]
    # an attack that also breaks the retain side is no evidence that the forgetting survives
    assert "damages the model" in attack_verdict("int4", 0.81, 0.39, 0.29, 0.86, 0.22)[1]
    assert "damages the model" not in attack_verdict("int4", 0.81, 0.39, 0.29, 0.86, 0.80)[1]
    assert "damages the model" not in attack_verdict("int4", 0.81, 0.39, 0.80, 0.86, 0.22)[1]  # it came back all the same
    # a rounding that breaks the original model too (the control) tests nothing (SmolLM2 under int4: 0.83 -> 0.31)
    verdict = attack_verdict("int4", 0.81, 0.39, 0.29, 0.86, 0.22, 0.83, 0.31)[1]
    assert "breaks the original model too" in verdict and "no test" in verdict
    assert "breaks the original" not in attack_verdict("int8", 0.81, 0.39, 0.36, 0.86, 0.86, 0.83, 0.82)[1]
    # a probe the original model hardly answers is flagged: there was little on those prompts to forget
    assert "tests little" in probe_verdict("paraphrase", 0.21, 0.0, 1.0, 0.12)[1]
    assert "tests little" not in probe_verdict("prefix50", 0.8, 0.2, 0.9, 0.3)[1]


def test_judge_recomputes_every_verdict_from_the_stored_scores():
    def scores(forget, retain):
        return {"forget/regurgitation": forget, "retain/regurgitation": retain}

    results = {"models": {"original": scores(0.8, 0.9), "unlearned": scores(0.4, 0.9)}, "probes": {
        "int4": {"kind": "attack", "original": scores(0.8, 0.9), "unlearned": scores(0.4, 0.9),
                 "attacked": scores(0.3, 0.2), "verdict": "old"},
        "relearn": {"kind": "attack", "original": scores(0.7, 0.9), "unlearned": scores(0.3, 0.9),
                    "attacked": scores(0.6, 0.9), "verdict": "old"},
        "prefix50": {"kind": "probe", "rows": 4, "original": {"forget/regurgitation": 0.6},
                     "unlearned": {"forget/regurgitation": 0.3}, "verdict": "old"},
        "paraphrase": {"kind": "probe", "rows": 0, "verdict": "paraphrase: not run"}}}
    judged = judge(results)["probes"]
    assert "damages the model" in judged["int4"]["verdict"] and judged["int4"]["recovered"] == pytest.approx(-0.25)
    assert "does not survive" in judged["relearn"]["verdict"] and judged["relearn"]["recovered"] == pytest.approx(0.75)
    assert judged["prefix50"]["forgotten_share"] == pytest.approx(0.5) and "holds" in judged["prefix50"]["verdict"]
    assert judged["paraphrase"]["verdict"] == "paraphrase: not run"
    # an audit of this version: the attacked model's retain rows teacher-forced only, and the damage read from them
    damage = {"forget/regurgitation": 0.3, "retain/exact_memorization": 0.3}
    results["probes"]["int4"]["attacked"] = damage
    for model in (results["probes"]["int4"]["unlearned"], results["probes"]["int4"]["original"]):
        model["retain/exact_memorization"] = 0.95
    verdict = judge(results)["probes"]["int4"]["verdict"]
    assert "it also takes retain exact memorization 0.95 -> 0.30: it damages the model" in verdict


def test_audit_plot_names_each_probe_in_words_and_explains_a_mia_score_of_zero(tmp_path):
    def scores(regurgitation, auc=None):
        return {"forget/regurgitation": regurgitation, **({"mia/auc": auc} if auc is not None else {})}

    results = {
        "rows": {"forget": 12, "retain": 12}, "mia": {"members": 4, "nonmembers": 4},
        "models": {"original": scores(0.9, 1.0), "unlearned": scores(0.2, 1.0)},
        "probes": {
            "int8": {"kind": "attack", "rows": 12, "original": scores(0.9), "unlearned": scores(0.2),
                     "attacked": scores(0.25)},
            "prefix50": {"kind": "probe", "rows": 5, "original": scores(0.7), "unlearned": scores(0.3)},
            "paraphrase": {"kind": "probe", "rows": 0, "verdict": "paraphrase: not run"},  # no panel
        },
    }
    fig = audit_plot(results, tmp_path / "audit.png")
    assert [ax.get_title() for ax in fig.axes] == ["8-bit quantization\n(12 forget rows)",
                                                   "prompts cut to half their\nlength\n(5 forget rows)"]
    assert fig.axes[0].get_ylabel() == "forget regurgitation (ROUGE-L)\nlower is better"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["original", "unlearned", "attacked"]
    note = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "MIA loss AUC (0.5 is best): original 1.00, unlearned 1.00" in note
    assert "MIA score 0: the loss attack still tells forget documents from unseen ones" in note
    assert (tmp_path / "audit.png").stat().st_size > 1000


# ---- relearning --------------------------------------------------------------------------------------------------


def _forget_nll(model, tokenizer, rows):
    from hf_unlearn.data.collator import tokenize_row

    total = 0.0
    with torch.no_grad():
        for row in rows:
            feature, _ = tokenize_row(tokenizer, row["input"], row["output"])
            ids = torch.tensor([feature["input_ids"]])
            total += model(input_ids=ids, labels=torch.tensor([feature["labels"]])).loss.item()
    return total / len(rows)


def test_relearning_on_some_forget_documents_brings_back_the_others(memorised_model, tokenizer, memorised_rows):
    rows = memorised_rows["forget"]
    seen, unseen = split_documents(rows, 0.5, seed=0)
    # "unlearn" by gradient ascent on every forget row: a shared direction that relearning half of them undoes
    unlearned = copy.deepcopy(memorised_model)
    from hf_unlearn.data.collator import pad, tokenize_row

    optimizer = torch.optim.Adam(unlearned.parameters(), lr=1e-3)
    feats = [tokenize_row(tokenizer, r["input"], r["output"])[0] for r in rows]
    for _ in range(3):
        ids = pad([f["input_ids"] for f in feats], tokenizer.pad_token_id)
        labels = pad([f["labels"] for f in feats], -100)
        (-unlearned(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss).backward()
        optimizer.step()
        optimizer.zero_grad()
    before, after = _forget_nll(memorised_model, tokenizer, unseen), _forget_nll(unlearned, tokenizer, unseen)
    assert after > before + 1.0, (before, after)
    params = copy.deepcopy(unlearned.state_dict())
    attacked = relearn(unlearned, tokenizer, seen, RelearnConfig(steps=20, learning_rate=1e-3, batch_size=2))
    recovered = _forget_nll(attacked, tokenizer, unseen)
    assert recovered < after - 0.3 * (after - before), (before, after, recovered)  # a good part comes back
    assert all(torch.equal(v, unlearned.state_dict()[k]) for k, v in params.items())  # the copy was trained
    with pytest.raises(ValueError, match="fraction"):
        RelearnConfig(fraction=1.0)


def test_a_very_long_row_is_scored_as_training_cut_it(memorised_model, memorised_rows, tokenizer):
    import time

    from hf_unlearn.audit.run import score_rows

    row = dict(memorised_rows["forget"][0])
    row["input"] = " ".join(["word"] * 20000) + " " + row["input"]  # ~20k tokens of prompt
    started = time.perf_counter()
    scores = score_rows(memorised_model, tokenizer, [row], memorised_rows["retain"][:2], max_new_tokens=4,
                        batch_size=2, max_length=64)
    assert time.perf_counter() - started < 60  # whole, the row would take the model minutes and gigabytes
    assert {"forget/regurgitation", "forget/exact_memorization", "retain/regurgitation"} <= set(scores)


def test_the_audit_generates_from_each_model_once_and_scores_subsets_from_what_it_kept(
        memorised_model, tiny_model, tokenizer, memorised_rows, lume_dir, monkeypatch):
    import hf_unlearn.audit.run as run
    from hf_unlearn.audit.run import audit_model, score_rows

    from .conftest import read_jsonl

    calls = {"generations": 0, "mia": 0}
    real_generations, real_mia = run.lume_generations, run.evaluate_mia

    def counted_generations(*args, **kwargs):
        calls["generations"] += 1
        return real_generations(*args, **kwargs)

    def counted_mia(*args, **kwargs):
        calls["mia"] += 1
        return real_mia(*args, **kwargs)

    monkeypatch.setattr(run, "lume_generations", counted_generations)
    monkeypatch.setattr(run, "evaluate_mia", counted_mia)
    forget, retain = memorised_rows["forget"], memorised_rows["retain"][:4]
    members = [r["input"] + " " + r["output"] for r in forget]
    nonmembers = [r["document"][:400] for r in read_jsonl(lume_dir / "mia" / "nonmember.jsonl")[:6]]
    config = RelearnConfig(steps=2, batch_size=2)
    results = audit_model(tiny_model, memorised_model, tokenizer, forget, retain, members, nonmembers,
                          probes=("int8", "relearn"), relearn_config=config, max_new_tokens=16, progress=None)
    # Generated from: original and unlearned, forget + retain once each; the attacked models (int8, relearned) their
    # forget rows only: their retain rows are scored teacher-forced (the damage check reads that), and so is the
    # control's (the original rounded the same way), which runs only where int8 took that score down. The attack:
    # original, unlearned, int8, relearned.
    int8 = results["probes"]["int8"]
    damaged = results["models"]["unlearned"][run.DAMAGE] - int8["attacked"][run.DAMAGE]
    assert ("original_attacked" in int8) == (damaged > run.DAMAGED)
    assert calls == {"generations": 2 + 2 + 1 + 1, "mia": 4}
    assert "retain/regurgitation" not in int8["attacked"] and "task_score" not in int8["attacked"]
    assert {"forget/regurgitation", "forget/exact_memorization", run.DAMAGE} <= set(int8["attacked"])
    assert set(results["seconds"]) == {"original", "unlearned", "int8", "relearn"}
    # the relearn probe's original and unlearned scores on the unseen documents, from the kept outputs, are what
    # scoring those rows afresh gives
    _, unseen = split_documents(forget, config.fraction, config.seed)
    for name, model in (("original", memorised_model), ("unlearned", tiny_model)):
        fresh = score_rows(model, tokenizer, unseen, retain, max_new_tokens=16, batch_size=16)
        kept = results["probes"]["relearn"][name]
        assert {k: kept[k] for k in fresh} == pytest.approx(fresh)
        assert kept["mia/auc"] == results["models"][name]["mia/auc"]


def test_the_quantization_control_is_scored_only_when_the_attack_damaged_the_model(
        memorised_model, tokenizer, memorised_rows, monkeypatch):
    """The original rounded the same way is what tells "the attack breaks any model" from "the forgetting does not
    survive": needed only when the quantized model lost its retain score. Here a stand-in attack that wrecks every
    weight it rounds (a test double for our own rounding, not for a dependency) makes that happen."""
    import hf_unlearn.audit.run as run
    from hf_unlearn.audit.run import audit_model

    def wrecking(model, scheme):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.0)

    forget, retain = memorised_rows["forget"][:4], memorised_rows["retain"][:4]
    kept = audit_model(memorised_model, memorised_model, tokenizer, forget, retain, probes=("int8",),
                       max_new_tokens=16, progress=None)
    assert "original_attacked" not in kept["probes"]["int8"]  # int8 keeps the memorised model's retain rows
    monkeypatch.setattr(run, "quantize_model", wrecking)
    wrecked = audit_model(memorised_model, memorised_model, tokenizer, forget, retain, probes=("int8",),
                          max_new_tokens=16, progress=None)
    control = wrecked["probes"]["int8"]["original_attacked"]  # the verdict reads its retain rows only
    assert run.DAMAGE in control and not any(k.startswith(("forget/", "mia/")) for k in control)
    assert control[run.DAMAGE] < 0.1  # the wrecked original too
