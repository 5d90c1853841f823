"""Batched greedy generation gives the task script's one-at-a-time completions."""

from __future__ import annotations

import pytest
import torch

from hf_unlearn.metrics.generation import (
    _compactable,
    decode_like_task,
    generate_completions,
    generate_one_at_a_time,
)
from hf_unlearn.metrics.lume import knowledge_score, knowledge_stop_chars, lume_scores_from_generations, score_lume
from hf_unlearn.support.tiny import tiny_causal_lm


pytestmark = pytest.mark.usefixtures("one_thread")


def test_input_order_and_state_are_kept(memorised_model, tokenizer, memorised_rows):
    rows = memorised_rows["forget"] + memorised_rows["retain"]
    tokenizer.padding_side = "right"
    memorised_model.train()
    completions = generate_completions(memorised_model, tokenizer, [r["input"] for r in rows], 64, batch_size=3)
    assert tokenizer.padding_side == "right"
    assert memorised_model.training
    assert all(p.grad is None for p in memorised_model.parameters())
    # Half of the rows come back verbatim, each against its own prompt: the input order is kept.
    exact = sum(c == r["output"] for c, r in zip(completions, rows))
    assert exact >= len(rows) // 3, f"only {exact}/{len(rows)} rows regurgitated"
    assert completions == generate_one_at_a_time(memorised_model, tokenizer, [r["input"] for r in rows], 64)


@pytest.mark.parametrize("arch", ["olmo", "llama"])
def test_left_padding_keeps_positions(tokenizer, lume_rows, arch):
    """Under left padding every real token gets the position it has unpadded, at prefill and at each new token.

    transformers 5's `generate` derives position ids from the attention mask; this records the ids the decoder
    receives. (Rotary attention only sees relative positions, so a uniform shift would not show in the logits;
    the logits are compared too, as the end-to-end check.)
    """
    model = tiny_causal_lm(tokenizer, arch=arch, seed=1).eval()
    prompts = [r["input"] for r in lume_rows["retain_validation"][:6]]
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    assert len(set(map(len, encoded))) > 1, "the prompts must need padding"
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for j, row in enumerate(encoded):
        ids[j, width - len(row) :] = torch.tensor(row)
        mask[j, width - len(row) :] = 1

    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True
    )
    kwargs = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        batched = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=tokenizer.eos_token_id, **kwargs)
        hook.remove()
        assert len(seen) == 3  # prefill, then one step per new token (KV cache)
        for j, row in enumerate(encoded):
            n = len(row)
            assert seen[0][j, width - n :].tolist() == list(range(n))
            assert [int(step[j, -1]) for step in seen[1:]] == [n, n + 1]
            single = model.generate(input_ids=torch.tensor([row]), pad_token_id=tokenizer.eos_token_id, **kwargs)
            for step in range(3):
                torch.testing.assert_close(batched.logits[step][j], single.logits[step][0], atol=1e-4, rtol=1e-4)


def test_batched_equals_one_at_a_time_on_lume_validation(memorised_model, tokenizer, lume_rows):
    """All 532 validation rows (forget + retain), 24 new tokens: >= 99% identical texts, scores within 0.01.

    24 new tokens (not the task's 256) keep the one-at-a-time reference path under a minute on one CPU core; rows
    still going after the first round (16 tokens) are resumed, so the rounds are covered too. The full 256-token
    comparison is benchmarks/eval_speed.py.
    """
    forget, retain = lume_rows["forget_validation"], lume_rows["retain_validation"]
    prompts = [r["input"] for r in forget + retain]
    batched = generate_completions(memorised_model, tokenizer, prompts, max_new_tokens=24, batch_size=32)
    single = generate_one_at_a_time(memorised_model, tokenizer, prompts, max_new_tokens=24)
    same = sum(b == s for b, s in zip(batched, single)) / len(prompts)
    assert same >= 0.99, f"only {same:.2%} identical"

    n = len(forget)
    scores_b = lume_scores_from_generations(forget, batched[:n], retain, batched[n:])
    scores_s = lume_scores_from_generations(forget, single[:n], retain, single[n:])
    assert abs(scores_b["harmonic-mean-task-aggregate"] - scores_s["harmonic-mean-task-aggregate"]) <= 0.01
    assert scores_b["aggregated-terms"] == pytest.approx(scores_s["aggregated-terms"], abs=0.01)
    for split in ("forget-set", "retain-set"):
        for key in ("overall-regurgitation-score", "overall-knowledge-score"):
            assert scores_b[split][key] == pytest.approx(scores_s[split][key], abs=0.01)


def test_score_lume_batched_matches_one_at_a_time_and_keeps_generations_on_request(
    memorised_model, tokenizer, memorised_rows
):
    forget, retain = memorised_rows["forget"], memorised_rows["retain"]
    batched = score_lume(memorised_model, tokenizer, forget, retain, max_new_tokens=64, batch_size=4)
    assert "generations" not in batched
    single = score_lume(
        memorised_model, tokenizer, forget, retain, max_new_tokens=64, one_at_a_time=True, return_generations=True
    )
    assert batched == {k: v for k, v in single.items() if k != "generations"}
    assert len(single["generations"]["forget"]) == len(forget) and len(single["generations"]["retain"]) == len(retain)
    # The model regurgitates much of its rows (each row's ROUGE-L recall against its own output).
    assert single["forget-set"]["overall-regurgitation-score"] > 0.3
    assert single["retain-set"]["overall-regurgitation-score"] > 0.3


def test_rounds_give_the_same_texts_as_one_call_per_batch(memorised_model, tokenizer, lume_rows):
    """Stopping after 4 tokens and resuming the rows still going changes nothing."""
    prompts = [r["input"] for r in lume_rows["forget_validation"][::6]]
    in_rounds = generate_completions(memorised_model, tokenizer, prompts, 48, batch_size=8, round_tokens=4,
                                     compact=False)
    one_call = generate_completions(memorised_model, tokenizer, prompts, 48, batch_size=8, round_tokens=None,
                                    compact=False)
    assert in_rounds == one_call
    assert generate_completions(memorised_model, tokenizer, prompts, 48, batch_size=8) == one_call  # compacting
    assert len({len(tokenizer(t)["input_ids"]) for t in one_call}) > 3  # rows stop at many different lengths


def test_lockstep_placeholder_calls_change_nothing(memorised_model, tokenizer, lume_rows):
    """`lockstep` (ZeRO-3, FSDP) as if another process always had one batch more: every round ends with a
    placeholder call, also once this process has no row left, and the texts stay those of the default path.
    (`synced_gpus` needs a process group: off here.)"""
    prompts = [r["input"] for r in lume_rows["forget_validation"][::12]]
    counts = []
    in_step = generate_completions(
        memorised_model, tokenizer, prompts, 40, batch_size=4, round_tokens=4, synced_gpus=False,
        lockstep=lambda n: counts.append(n) or n + 1,
    )
    assert in_step == generate_completions(memorised_model, tokenizer, prompts, 40, batch_size=4)
    assert len(counts) == 2  # rounds of 4 and 36 tokens: "the other process" always had a batch left


def test_call_dependent_settings_disable_rounds(memorised_model, tokenizer, memorised_rows):
    """`forced_eos_token_id` forces EOS at a call's last step: with rounds it would end every round."""
    prompts = [r["input"] for r in memorised_rows["forget"][:3]]
    memorised_model.generation_config.forced_eos_token_id = tokenizer.eos_token_id
    texts = generate_completions(memorised_model, tokenizer, prompts, 24, batch_size=2, round_tokens=2)
    assert texts == generate_one_at_a_time(memorised_model, tokenizer, prompts, 24)
    assert any(len(tokenizer(t)["input_ids"]) > 2 for t in texts)


def test_decode_applies_the_task_clean_up(tokenizer):
    """transformers 5 skips `clean_up_tokenization_spaces` for BPE tokenizers; the task's 4.x decode applied it."""
    ids = tokenizer("He said : no , it is n't ; fine .")["input_ids"]
    assert decode_like_task(tokenizer, ids) == "He said : no, it isn't ; fine."
    ids = tokenizer("Done .</s>")["input_ids"]
    assert decode_like_task(tokenizer, ids) == "Done."


def test_empty_input_list_and_bad_batch_size(tiny_model, tokenizer):
    assert generate_completions(tiny_model, tokenizer, []) == []
    with pytest.raises(ValueError):
        generate_completions(tiny_model, tokenizer, ["x"], batch_size=0)


def test_question_rows_stop_once_their_score_is_settled_and_score_the_same(memorised_model, tokenizer,
                                                                          memorised_rows, lume_rows):
    """`knowledge_stop_chars`: a question row stops once its text is longer than 3x its answer + 16 characters (no
    continuation can then equal the answer); its text is a prefix of the full one and every score is unchanged."""
    rows = memorised_rows["forget"] + lume_rows["forget_validation"][:24]  # memorised, and rows the model babbles on
    stops = knowledge_stop_chars(rows)
    assert stops == [3 * len(r["output"].strip()) + 16 if r["id"][:-1].endswith("qa") else None for r in rows]
    assert any(s is None for s in stops) and any(s is not None for s in stops)
    prompts = [r["input"] for r in rows]
    full = generate_completions(memorised_model, tokenizer, prompts, 96, batch_size=8)
    cut = generate_completions(memorised_model, tokenizer, prompts, 96, batch_size=8, stop_after_chars=stops)
    assert all(f.startswith(c) for f, c in zip(full, cut))
    assert sum(len(c) < len(f) for f, c in zip(full, cut)) >= 2  # rows that would have gone on were stopped
    assert [c == f for c, f, s in zip(cut, full, stops) if s is None] == [True] * stops.count(None)
    assert lume_scores_from_generations(rows, cut, rows, cut) == lume_scores_from_generations(rows, full, rows, full)
    knowledge = [knowledge_score(r["output"], f) for r, f, s in zip(rows, full, stops) if s is not None]
    assert 0 < sum(knowledge) < len(knowledge)  # both outcomes occur among the stopped kind
    with pytest.raises(ValueError, match="stop_after_chars has 1 entries for 2 prompts"):
        generate_completions(memorised_model, tokenizer, prompts[:2], 8, stop_after_chars=[None])


def test_drafts_give_greedy_decodings_texts_with_fewer_generate_calls(memorised_model, tokenizer, memorised_rows,
                                                                      lume_rows):
    """`drafts`: the reference answers as drafts (right for memorised rows, wrong after a few tokens for rows the
    model never saw, wrong from the first token when shuffled), the same texts as without them; a memorised row
    then costs no `generate` call."""
    rows = memorised_rows["forget"] + memorised_rows["retain"] + lume_rows["forget_validation"][:12]
    prompts, answers = [r["input"] for r in rows], [r["output"] for r in rows]
    calls = []
    generate = memorised_model.generate
    memorised_model.generate = lambda *a, **k: calls.append(k["input_ids"].shape[0]) or generate(*a, **k)
    try:
        plain = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8, compact=False)
        rows_plain = sum(calls)
        calls.clear()
        drafted = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8, drafts=answers,
                                       compact=False)
        rows_generated = sum(calls)
        calls.clear()
        shuffled = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8,
                                        drafts=answers[1:] + answers[:1])
        partial = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8,
                                       drafts=[a if i % 2 else None for i, a in enumerate(answers)])
    finally:
        del memorised_model.generate
    assert drafted == plain and shuffled == plain and partial == plain
    regurgitated = sum(p == a for p, a in zip(plain, answers))
    assert regurgitated >= 8 and rows_generated <= rows_plain - regurgitated  # proved rows never reach `generate`
    # a draft longer than the limit, and limits of 1 token
    assert generate_completions(memorised_model, tokenizer, prompts, 5, drafts=answers) == \
        generate_completions(memorised_model, tokenizer, prompts, 5)
    assert generate_completions(memorised_model, tokenizer, prompts[:4], 1, drafts=answers[:4]) == \
        generate_completions(memorised_model, tokenizer, prompts[:4], 1)
    with pytest.raises(ValueError, match="drafts has 1 entries for 2 prompts"):
        generate_completions(memorised_model, tokenizer, prompts[:2], 8, drafts=answers[:1])


def test_compacting_drops_stopped_rows_and_gives_generates_texts(memorised_model, tokenizer, memorised_rows,
                                                                lume_rows):
    """The default path drops each row from its batch (and the KV cache) as it stops: the same texts as
    `generate` in rounds and as the task's one-at-a-time path, with fewer rows through the model; with drafts and
    with character limits too. Settings it cannot reproduce (a logits processor) fall back to `generate`."""
    rows = memorised_rows["forget"] + lume_rows["forget_validation"][:16]  # stop early, and run to the limit
    prompts = [r["input"] for r in rows]
    seen = []
    hook = memorised_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        compacted = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8)
        rows_compacted = sum(seen)
        seen.clear()
        in_rounds = generate_completions(memorised_model, tokenizer, prompts, 64, batch_size=8, compact=False)
        rows_in_rounds = sum(seen)
    finally:
        hook.remove()
    assert compacted == in_rounds == generate_one_at_a_time(memorised_model, tokenizer, prompts, 64)
    assert len({len(tokenizer(t)["input_ids"]) for t in compacted}) > 3  # rows stop at many different lengths
    assert rows_compacted < rows_in_rounds
    answers = [r["output"] for r in rows]
    assert generate_completions(memorised_model, tokenizer, prompts, 64, drafts=answers) == compacted
    stops = knowledge_stop_chars(rows)
    cut = generate_completions(memorised_model, tokenizer, prompts, 64, stop_after_chars=stops)
    cut_in_rounds = generate_completions(memorised_model, tokenizer, prompts, 64, stop_after_chars=stops,
                                         compact=False)
    # a row stops at the token that passes its limit, not at the end of a round: a prefix of the rounds' text
    assert all(r.startswith(c) and f.startswith(c) for c, r, f in zip(cut, cut_in_rounds, compacted))
    assert lume_scores_from_generations(rows, cut, rows, cut) == \
        lume_scores_from_generations(rows, compacted, rows, compacted)
    # through a peft model (the unlearned model of a LoRA run), its adapter changed from zero
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(memorised_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    assert _compactable(peft_model, {"max_new_tokens": 8, "do_sample": False})
    assert not _compactable(peft_model, {"max_new_tokens": 8, "repetition_penalty": 1.3})
    assert generate_completions(peft_model, tokenizer, prompts, 32, batch_size=8) == \
        generate_completions(peft_model, tokenizer, prompts, 32, batch_size=8, compact=False)
    peft_model.unload()
    # a logits processor (a repetition penalty) is generate's to apply: the same texts as generate's own loop
    penalised = generate_completions(memorised_model, tokenizer, prompts[:6], 32, repetition_penalty=1.3)
    assert penalised == generate_completions(memorised_model, tokenizer, prompts[:6], 32, repetition_penalty=1.3,
                                             compact=False)
