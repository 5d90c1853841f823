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
