"""Issue #32's attacks and metrics against hand-computed values: MUSE's PrivLeak, the reference-model and gradient-norm
attacks, and TOFU's truth ratio, forget quality (KS test against scipy's) and model utility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_unlearn.metrics.mia import (
    DocumentTokenStats,
    gradient_norm_scores,
    gradient_norms,
    membership_auc,
    privleak,
    reference_scores,
)
from hf_unlearn.metrics.tofu import (
    UTILITY_TERMS,
    forget_quality,
    model_utility,
    normalised_probability,
    option_probability,
    split_truth_ratios,
    truth_ratio,
    truth_ratio_score,
    utility_from_probabilities,
)


def stats(log_probs) -> DocumentTokenStats:
    log_probs = np.asarray(log_probs, float)
    return DocumentTokenStats(log_probs, np.zeros_like(log_probs), np.ones_like(log_probs))


def test_privleak_in_muse_sign_convention_by_hand():
    # a model that still tells every forget document from the holdout (our AUC 1) against a retain model at chance
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.0, 0.5) == pytest.approx(100.0)  # pushed past the unseen ones: over-unlearned
    # MUSE's AUCs are 1 - ours: (0.3 - 0.45) / 0.45 * 100
    assert privleak(0.7, 0.55) == pytest.approx((0.3 - 0.45) / 0.45 * 100, abs=1e-9)
    with pytest.raises(ValueError, match="auc_retain is 1"):
        privleak(0.5, 1.0)
    with pytest.raises(ValueError, match=r"auc_unlearned must be in \[0, 1\]"):
        privleak(1.2, 0.5)


def test_reference_attack_by_hand():
    model = [stats([-1.0, -1.0]), stats([-3.0, -1.0])]  # losses 1.0, 2.0
    reference = [stats([-4.0, -2.0]), stats([-2.0, -2.0])]  # losses 3.0, 2.0
    assert reference_scores(model, reference).tolist() == pytest.approx([2.0, 0.0])
    # the easy document is no longer a member just because it is easy: the harder member wins on the reference
    members, nonmembers = [stats([-2.0]), stats([-2.5])], [stats([-1.0]), stats([-3.0])]
    ref_members, ref_nonmembers = [stats([-5.0]), stats([-5.5])], [stats([-1.1]), stats([-3.1])]
    assert membership_auc(reference_scores(members, ref_members), reference_scores(nonmembers, ref_nonmembers)) == 1.0
    with pytest.raises(ValueError, match="2 documents scored by the model but 1"):
        reference_scores(model, reference[:1])


def test_gradient_norm_by_hand_on_a_tiny_model(tiny_model, tokenizer):
    documents = ["The cat sat on the mat.", "A completely different sentence about rivers."]
    flags = [p.requires_grad for p in tiny_model.parameters()]
    norms = gradient_norms(tiny_model, tokenizer, documents)
    # by hand: the loss's gradient over every parameter, its L2 norm
    ids = torch.tensor([tokenizer(documents[1])["input_ids"]])
    tiny_model.zero_grad()
    for p in tiny_model.parameters():
        p.requires_grad_(True)
    tiny_model.eval()
    tiny_model(input_ids=ids, labels=ids).loss.backward()
    expected = math.sqrt(sum(float(p.grad.square().sum()) for p in tiny_model.parameters() if p.grad is not None))
    tiny_model.zero_grad()
    for p, flag in zip(tiny_model.parameters(), flags):
        p.requires_grad_(flag)
    assert norms[1] == pytest.approx(expected, rel=1e-4)
    assert gradient_norm_scores(norms).tolist() == pytest.approx([-n for n in norms])
    assert [p.requires_grad for p in tiny_model.parameters()] == flags  # left as it was


def test_gradient_norm_is_smaller_on_what_the_model_memorised(memorised_model, tokenizer, memorised_rows, lume_rows):
    members = [r["input"] + " " + r["output"] for r in memorised_rows["forget"][:4]]
    unseen = [r["input"] + " " + r["output"] for r in lume_rows["forget_validation"] if r["task"] == "Task2"][:4]
    scores_m = gradient_norm_scores(gradient_norms(memorised_model, tokenizer, members))
    scores_u = gradient_norm_scores(gradient_norms(memorised_model, tokenizer, unseen))
    assert membership_auc(scores_m, scores_u) >= 0.75


def test_truth_ratio_probability_and_options_by_hand():
    assert normalised_probability([1.0, 3.0]) == pytest.approx(math.exp(-2.0))
    assert truth_ratio([0.1, 0.3], 0.4) == pytest.approx(0.5)
    assert split_truth_ratios([0.4, 0.2], [[0.1, 0.3], [0.4]]) == pytest.approx([0.5, 2.0])
    assert truth_ratio_score([0.5, 2.0]) == pytest.approx((0.5 + 0.0) / 2)
    assert option_probability(0.6, [0.1, 0.2, 0.1]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="at least one perturbed answer"):
        truth_ratio([], 0.4)
    with pytest.raises(ValueError, match="no tokens"):
        normalised_probability([])


def test_forget_quality_is_scipys_ks_test():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 40), rng.uniform(0.3, 1.3, 40)
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue, abs=1e-12)
    assert forget_quality(a, a) == pytest.approx(1.0)
    # a hand case: [1,2,3] against [4,5,6], the largest CDF gap is 1; the exact two-sided p-value is 2 / C(6,3)
    assert forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20, abs=1e-9)


def test_model_utility_is_the_harmonic_mean_of_nine_terms():
    terms = dict(zip(UTILITY_TERMS, [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25]))
    assert model_utility(terms) == pytest.approx(9 / (3 * 2 + 3 * 1 + 3 * 4))
    assert model_utility({**terms, "world_facts/rouge": 0.0}) == 0.0
    with pytest.raises(ValueError, match="needs retain/probability"):
        model_utility({k: v for k, v in terms.items() if k != "retain/probability"})
    split = {"answer": [0.5, 0.7], "true": [0.5, 0.7], "perturbed": [[0.25, 0.25], [0.7, 0.7]], "rouge": [1.0, 0.5]}
    out = utility_from_probabilities(split, split, split)
    assert out["retain/probability"] == pytest.approx(0.6)
    assert out["real_authors/probability"] == pytest.approx((0.5 / 1.0 + 0.7 / 2.1) / 2)
    assert out["world_facts/truth_ratio"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["model_utility"] == pytest.approx(model_utility(out))


def _tofu(name, n):
    import json

    from .conftest import SHARED_DATA

    with open(SHARED_DATA / "tofu" / f"{name}.jsonl") as f:
        return [json.loads(line) for line in f][:n]


def test_answer_probability_by_hand_and_the_tofu_scores_of_a_tiny_model(tiny_model, tokenizer):
    from hf_unlearn.metrics.tofu import answer_probabilities, evaluate_tofu, tofu_prompt

    prompt, answer = tofu_prompt(tokenizer, "Who wrote it?", chat_template=False), "Someone did."
    assert prompt == "Question: Who wrote it?\nAnswer: "
    p = tokenizer(prompt)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = tiny_model(torch.tensor([p + a])).logits[0].log_softmax(-1)
    nll = [-float(logp[len(p) - 1 + j, t]) for j, t in enumerate(a)]
    assert answer_probabilities(tiny_model, tokenizer, [prompt, prompt], [answer, answer + " More."])[0] == \
        pytest.approx(math.exp(-sum(nll) / len(nll)), rel=1e-4)

    forget, retain = _tofu("forget01_perturbed", 3), _tofu("retain_perturbed", 3)
    ra, wf = _tofu("real_authors_perturbed", 3), _tofu("world_facts_perturbed", 3)
    first = evaluate_tofu(tiny_model, tokenizer, forget, retain, ra, wf, chat_template=False, max_new_tokens=8)
    assert set(UTILITY_TERMS) <= {k.removeprefix("tofu/") for k in first}
    assert first["tofu/model_utility"] == pytest.approx(
        model_utility({k: first[f"tofu/{k}"] for k in UTILITY_TERMS}))  # 0 where an untrained model's ROUGE is 0
    assert all(0 <= first[f"tofu/{k}"] <= 1 for k in UTILITY_TERMS) and len(first["tofu/forget/truth_ratios"]) == 3
    # against its own truth ratios the KS test cannot tell the models apart
    again = evaluate_tofu(tiny_model, tokenizer, forget, retain, ra, wf, first["tofu/forget/truth_ratios"],
                          chat_template=False, max_new_tokens=8)
    assert again["tofu/forget_quality"] == pytest.approx(1.0)
    # a split without its perturbed answers is refused, naming the row and what is missing
    with pytest.raises(ValueError, match=r"TOFU row 1: no perturbed_answer .*_perturbed.jsonl"):
        evaluate_tofu(tiny_model, tokenizer, _tofu("forget01", 2), retain, ra, wf, chat_template=False)
    with pytest.raises(ValueError, match="must be the same questions"):
        evaluate_tofu(tiny_model, tokenizer, forget, retain, ra, wf, [1.0], chat_template=False, max_new_tokens=8)


@pytest.fixture(scope="module")
def tofu_models(tmp_path_factory):
    """A tiny target that memorised 8 questions of forget01's two authors and 8 retain questions, and a retain model
    that memorised the retain questions only (TOFU's plain `Question: ...\\nAnswer: ` format), saved."""
    from hf_unlearn.metrics.tofu import tofu_prompt
    from hf_unlearn.support.tiny import memorise, tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("tofu")
    files = {n: _tofu(n, 8) for n in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed",
                                      "world_facts_perturbed")}
    texts = [r["question"] + " " + r["answer"] + " " + " ".join(r["perturbed_answer"]) + " "
             + r.get("paraphrased_answer", "") for rows in files.values() for r in rows]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    data = root / "data"
    data.mkdir()
    for name, rows in files.items():
        (data / f"{name}.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    qa = lambda rows: [{"input": tofu_prompt(tokenizer, r["question"], False), "output": r["answer"]}  # noqa: E731
                       for r in rows]
    for name, rows in (("target", files["forget01_perturbed"] + files["retain_perturbed"]),
                       ("retain_model", files["retain_perturbed"])):
        model = tiny_causal_lm(tokenizer, hidden_size=64, num_hidden_layers=2)
        memorise(model, tokenizer, qa(rows), epochs=150)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root, files


def test_evaluate_benchmark_tofu_end_to_end(tofu_models, tmp_path, capsys):
    import json

    from hf_unlearn.cli import main as cli_main

    root, files = tofu_models
    out = tmp_path / "out"
    assert cli_main(["evaluate", "--benchmark", "tofu", "--model", str(root / "target"), "--data", str(root / "data"),
                     "--retain-model", str(root / "retain_model"), "--output-dir", str(out),
                     "--max-new-tokens", "96", "--threads", "1"]) == 0
    results = json.loads((out / "evaluation_results.jsonl").read_text())
    assert results["benchmark"] == "tofu" and results["forget_split"] == "forget01"
    assert {f"tofu/{k}" for k in UTILITY_TERMS} | {"tofu/model_utility", "tofu/forget_quality",
                                                   "tofu/forget/probability", "tofu/forget/rouge"} <= set(results)
    # the target answers the forget questions it memorised; the retain model never saw them
    assert results["tofu/forget/rouge"] > 0.8 and results["tofu/forget/probability"] > 0.8
    assert 0 <= results["tofu/forget_quality"] <= 1 and len(results["tofu/forget/truth_ratios"]) == 8
    assert results["tofu/retain/rouge"] > 0.8  # memorised by both
    # no answer text in what it wrote or printed
    written = (out / "evaluation_results.jsonl").read_text() + capsys.readouterr().out
    for row in files["forget01_perturbed"]:
        assert row["answer"] not in written


def test_tofu_bad_input_is_refused_in_one_line(tofu_models, tmp_path, capsys):
    from hf_unlearn.cli import main as cli_main
    from hf_unlearn.support.tiny import tiny_causal_lm, train_tokenizer

    root, files = tofu_models
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, rows in files.items():
        rows = [{k: v for k, v in r.items() if k != "perturbed_answer"} for r in rows] if name.startswith("forget") \
            else rows
        (bad / f"{name}.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    args = ["evaluate", "--benchmark", "tofu", "--model", str(root / "target"), "--output-dir", str(tmp_path / "o")]
    assert cli_main([*args, "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "forget01_perturbed.jsonl, line 1: field 'perturbed_answer' is missing" in err and len(err.splitlines()) == 1
    other = tmp_path / "other"
    tokenizer = train_tokenizer(["entirely different words for another vocabulary"] * 10, vocab_size=300)
    tiny_causal_lm(tokenizer, hidden_size=32, num_hidden_layers=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    assert cli_main([*args, "--data", str(root / "data"), "--retain-model", str(other)]) == 2
    err = capsys.readouterr().err
    assert "has another tokenizer than --model" in err and len(err.strip().splitlines()) == 1


def test_the_tofu_callback_logs_the_scores_during_training(tofu_models, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import TofuEvaluationCallback, UnlearningConfig, UnlearningTrainer
    from hf_unlearn.metrics.tofu import tofu_prompt

    root, files = tofu_models
    tokenizer = AutoTokenizer.from_pretrained(root / "target")
    model = AutoModelForCausalLM.from_pretrained(root / "target")
    rows = lambda split: [{"input": tofu_prompt(tokenizer, r["question"], False), "output": r["answer"]}  # noqa: E731
                          for r in files[split]]
    config = UnlearningConfig(output_dir=str(tmp_path / "run"), method="gd", max_steps=2, learning_rate=1e-3,
                              per_device_train_batch_size=4, report_to="none", save_strategy="no",
                              retain_nll_weight=1.0, logging_steps=1)
    from peft import LoraConfig

    trainer = UnlearningTrainer(model=model, args=config, forget_dataset=Dataset.from_list(rows("forget01_perturbed")),
                                retain_dataset=Dataset.from_list(rows("retain_perturbed")), processing_class=tokenizer,
                                peft_config=LoraConfig(r=4, lora_alpha=4, target_modules="all-linear"))
    callback = TofuEvaluationCallback(trainer, files["forget01_perturbed"][:4], files["retain_perturbed"][:4],
                                      files["real_authors_perturbed"][:4], files["world_facts_perturbed"][:4],
                                      chat_template=False, max_new_tokens=16, unit="step", every=1)
    trainer.add_callback(callback)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "tofu/model_utility" in h]
    assert [h["step"] for h in logged] == [0, 1, 2]  # before the first step, then every step
    assert {"tofu/forget/probability", "tofu/forget/rouge", "tofu/forget/truth_ratio"} <= set(logged[0])
    assert not any(isinstance(v, list) for h in logged for v in h.values())
