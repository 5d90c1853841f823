"""TOFU's metrics (Maini et al. 2024, arXiv:2401.06121; as open-unlearning computes them): truth ratio, forget
quality and model utility, as plain functions of per-question numbers; and the one model pass they all read.

Per question q and answer a, `Ptilde(a | q) = exp(-mean token NLL of a given q)` (a length-normalised probability):

- **truth ratio** `R = mean over perturbed a' of Ptilde(a' | q) / Ptilde(a_paraphrased | q)`: how much more likely the
  model finds wrong answers than a paraphrase of the right one (for real_authors and world_facts, which carry no
  paraphrase, the answer itself);
- **forget quality**: the p-value of the two-sample Kolmogorov-Smirnov test between the unlearned model's truth ratios
  on the forget questions and a *retain model's* (the model trained without the forget set) on the same questions:
  high (>= 0.05, say) when the test cannot tell the two apart;
- **model utility**: the harmonic mean of nine numbers, for each of retain, real_authors and world_facts: the
  probability (retain: `Ptilde(answer | q)`; real_authors, world_facts: `Ptilde(correct) / sum of Ptilde over the
  correct and perturbed options`), the ROUGE-L recall of the greedy answer, and the truth-ratio score
  `max(0, 1 - R)`. A harmonic mean: one collapsed number pulls the whole down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_unlearn.data.documents import question_prompt


def normalised_probability(token_nll: Sequence[float]) -> float:
    """`Ptilde = exp(-mean token NLL)` of one answer from its tokens' NLLs."""
    values = np.asarray(token_nll, dtype=float)
    if values.size == 0:
        raise ValueError("an answer with no tokens has no probability")
    return float(np.exp(-values.mean()))


def truth_ratio(perturbed: Sequence[float], true: float) -> float:
    """`R = mean(Ptilde(perturbed answers)) / Ptilde(paraphrased, or true, answer)` of one question."""
    if not len(perturbed):
        raise ValueError("a truth ratio needs at least one perturbed answer")
    if true <= 0:
        raise ValueError(f"the true answer's probability must be > 0, got {true}")
    return float(np.mean(np.asarray(perturbed, dtype=float)) / true)


def truth_ratio_score(ratios: Sequence[float]) -> float:
    """The model-utility term of a split's truth ratios: `mean(max(0, 1 - R))` (1: wrong answers never likelier)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios, dtype=float))))


def option_probability(correct: float, options: Sequence[float]) -> float:
    """`Ptilde(correct) / (Ptilde(correct) + sum of Ptilde(wrong options))` of one multiple-choice question."""
    total = correct + float(np.sum(options))
    if total <= 0:
        raise ValueError("the options' probabilities sum to 0")
    return float(correct / total)


def forget_quality(unlearned_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test (`scipy.stats.ks_2samp`, two-sided) between the unlearned model's truth ratios
    on the forget questions and the retain model's on the same questions."""
    from scipy.stats import ks_2samp

    if not len(unlearned_ratios) or not len(retain_model_ratios):
        raise ValueError("forget quality needs truth ratios of both models")
    return float(ks_2samp(np.asarray(unlearned_ratios, float), np.asarray(retain_model_ratios, float)).pvalue)


UTILITY_TERMS = tuple(f"{split}/{term}" for split in ("retain", "real_authors", "world_facts")
                      for term in ("probability", "rouge", "truth_ratio"))


def model_utility(terms: Mapping[str, float]) -> float:
    """Harmonic mean of the nine `UTILITY_TERMS` (0 if any is 0)."""
    missing = [k for k in UTILITY_TERMS if k not in terms]
    if missing:
        raise ValueError(f"model utility needs {', '.join(missing)}")
    values = np.asarray([terms[k] for k in UTILITY_TERMS], dtype=float)
    if (values < 0).any():
        raise ValueError("model utility terms must be >= 0")
    if (values == 0).any():
        return 0.0
    return float(len(values) / np.sum(1.0 / values))


def split_truth_ratios(true: Sequence[float], perturbed: Sequence[Sequence[float]]) -> list[float]:
    """Each question's truth ratio from its true (paraphrased) answer's `Ptilde` and its perturbed answers'."""
    if len(true) != len(perturbed):
        raise ValueError(f"{len(true)} true answers but {len(perturbed)} lists of perturbed ones")
    return [truth_ratio(p, t) for t, p in zip(true, perturbed)]


def utility_from_probabilities(retain: Mapping[str, Any], real_authors: Mapping[str, Any],
                               world_facts: Mapping[str, Any]) -> dict[str, float]:
    """The nine terms and model utility from per-question numbers: each split a mapping with `answer` (Ptilde of
    each answer), `true` and `perturbed` (for the truth ratios) and `rouge` (each greedy answer's ROUGE-L recall)."""
    terms = {}
    for name, split in (("retain", retain), ("real_authors", real_authors), ("world_facts", world_facts)):
        if name == "retain":
            terms[f"{name}/probability"] = float(np.mean(split["answer"]))
        else:  # the correct option against the wrong ones (the perturbed answers)
            terms[f"{name}/probability"] = float(np.mean([option_probability(a, p) for a, p in
                                                          zip(split["answer"], split["perturbed"])]))
        terms[f"{name}/rouge"] = float(np.mean(split["rouge"]))
        terms[f"{name}/truth_ratio"] = truth_ratio_score(split_truth_ratios(split["true"], split["perturbed"]))
    terms["model_utility"] = model_utility(terms)
    return terms


# ---- the model pass ----------------------------------------------------------------------------------------------


def tofu_prompt(tokenizer, question: str, chat_template: bool = True) -> str:
    """The question as the model is asked it: through its chat template when it has one (and `chat_template`), else
    TOFU's plain `Question: ...\\nAnswer: ` format."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return question_prompt(question)


def missing_tofu_field(row: Mapping[str, Any]) -> str | None:
    """The first of `question`, `answer`, `perturbed_answer` that a TOFU row lacks (missing or empty, or wrong answers
    that are not a list), else None: what the truth ratio cannot do without."""
    for key in ("question", "answer", "perturbed_answer"):
        value = row.get(key)
        if not value or (key == "perturbed_answer" and not isinstance(value, list)):
            return key
    return None


def answer_probabilities(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16
                         ) -> list[float]:
    """`Ptilde(answer | prompt) = exp(-mean token NLL of the answer's tokens)` of each pair (no EOS), in order."""
    from ..calibration import documents_nll

    features = []
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not a:
            raise ValueError("an empty answer has no probability")
        features.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return (-documents_nll(model, features, pad_id, batch_size)).exp().tolist()  # the answer tokens' mean NLL


def tofu_split(model, tokenizer, rows: Sequence[Mapping[str, Any]], chat_template: bool = True,
               max_new_tokens: int = 64, batch_size: int = 16, generate: bool = True) -> dict[str, list]:
    """Per-question numbers of one TOFU split (rows with `question`, `answer`, `perturbed_answer` and, where the split
    has them, `paraphrased_answer`): `answer` (Ptilde of the answer), `true` (of the paraphrase, else the answer),
    `perturbed` (of each perturbed answer), `truth_ratio`, and `rouge` (ROUGE-L recall of the greedy answer)."""
    from .generation import generate_completions
    from .lume import regurgitation_score

    for i, row in enumerate(rows):
        missing = missing_tofu_field(row)
        if missing:
            raise ValueError(f"TOFU row {i + 1}: no {missing} (a split scored for the truth ratio needs "
                             "its perturbed answers: the *_perturbed.jsonl files)")
    prompts = [tofu_prompt(tokenizer, r["question"], chat_template) for r in rows]
    answer = answer_probabilities(model, tokenizer, prompts, [r["answer"] for r in rows], batch_size)
    has_paraphrase = all(r.get("paraphrased_answer") for r in rows)
    true = (answer_probabilities(model, tokenizer, prompts, [r["paraphrased_answer"] for r in rows], batch_size)
            if has_paraphrase else list(answer))
    flat = [(i, a) for i, r in enumerate(rows) for a in r["perturbed_answer"]]
    probs = answer_probabilities(model, tokenizer, [prompts[i] for i, _ in flat], [a for _, a in flat], batch_size)
    perturbed: list[list[float]] = [[] for _ in rows]
    for (i, _), p in zip(flat, probs):
        perturbed[i].append(p)
    out = {"answer": answer, "true": true, "perturbed": perturbed, "truth_ratio": split_truth_ratios(true, perturbed)}
    if generate:
        generations = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                           batch_size=batch_size, drafts=[r["answer"] for r in rows])
        out["rouge"] = [regurgitation_score(r["answer"], g) for r, g in zip(rows, generations)]
    return out


def evaluate_tofu(model, tokenizer, forget: Sequence[Mapping], retain: Sequence[Mapping],
                  real_authors: Sequence[Mapping], world_facts: Sequence[Mapping],
                  retain_model_truth_ratios: Sequence[float] | None = None, chat_template: bool = True,
                  max_new_tokens: int = 64, batch_size: int = 16) -> dict[str, Any]:
    """TOFU's scores of one model (flat `tofu/...` keys): the forget split's probability, ROUGE and truth ratio, the
    nine model-utility terms and model utility, and, given the retain model's truth ratios on the same forget
    questions, forget quality. `tofu/forget/truth_ratios` keeps the per-question ratios (what a retain model's run
    passes to the unlearned model's as `retain_model_truth_ratios`)."""
    splits = {name: tofu_split(model, tokenizer, rows, chat_template, max_new_tokens, batch_size)
              for name, rows in (("forget", forget), ("retain", retain), ("real_authors", real_authors),
                                 ("world_facts", world_facts))}
    f = splits["forget"]
    out: dict[str, Any] = {"tofu/forget/probability": float(np.mean(f["answer"])),
                           "tofu/forget/rouge": float(np.mean(f["rouge"])),
                           "tofu/forget/truth_ratio": truth_ratio_score(f["truth_ratio"]),
                           "tofu/forget/truth_ratios": list(f["truth_ratio"])}
    terms = utility_from_probabilities(splits["retain"], splits["real_authors"], splits["world_facts"])
    out.update({f"tofu/{k}": v for k, v in terms.items()})
    if retain_model_truth_ratios is not None:
        if len(retain_model_truth_ratios) != len(forget):
            raise ValueError(f"the retain model's truth ratios are of {len(retain_model_truth_ratios)} questions, the "
                             f"forget split has {len(forget)}: they must be the same questions")
        out["tofu/forget_quality"] = forget_quality(f["truth_ratio"], retain_model_truth_ratios)
    return out
