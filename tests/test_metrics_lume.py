"""LUME task-score pieces against hand-computed values, and the official id parsing on the real rows."""

from __future__ import annotations

import statistics

import pytest

from hf_unlearn.metrics.lume import (
    aggregated_terms,
    knowledge_score,
    lume_scores_from_generations,
    regurgitation_score,
    row_kind,
    split_scores,
    task_score,
)


def row(id_: str, task: str, output: str) -> dict:
    return {"id": id_, "task": task, "input": "prompt", "output": output, "split": "x"}


# --- row kind -------------------------------------------------------------------------------------------------


def test_row_kind_reads_the_end_of_the_id():
    assert row_kind("6de8b1ac-7d6c-4e4e-9a42-7c7f1f0f0c2bsc1") == "sc"
    assert row_kind("6de8b1ac-7d6c-4e4e-9a42-7c7f1f0f0c2bqa3") == "qa"
    # Task1 ids carry literal double quotes around the uuid.
    assert row_kind('"8f24c511-a319-4a9f-80c2-ca6fac131233"sc1') == "sc"
    assert row_kind('"8f24c511-a319-4a9f-80c2-ca6fac131233"qa0') == "qa"
    # Exactly `id[:-1].endswith(...)`: a two-digit suffix or a bare id is not scored, as in the task's script.
    assert row_kind("abcqa12") is None
    assert row_kind("abcsc") is None
    assert row_kind("plain-id") is None


def test_row_kind_on_every_real_row_matches_the_documented_counts(lume_rows):
    expected = {  # (sc, qa) per file, from shared/data/SOURCES.md
        "forget_train": (342, 770),
        "retain_train": (364, 772),
        "forget_validation": (81, 173),
        "retain_validation": (89, 189),
    }
    for name, (sc, qa) in expected.items():
        kinds = [row_kind(r["id"]) for r in lume_rows[name]]
        assert kinds.count("sc") == sc and kinds.count("qa") == qa and kinds.count(None) == 0
    task1 = [r for r in lume_rows["forget_validation"] if r["task"] == "Task1"]
    assert task1 and all('"' in r["id"] for r in task1)
    assert {row_kind(r["id"]) for r in task1} == {"sc", "qa"}


# --- per-row scores -------------------------------------------------------------------------------------------


def test_regurgitation_is_rouge_l_recall_with_stemming():
    # LCS of [the cat sat on the mat] and [the cat is on a mat] = the cat on mat: 4 of the 6 expected tokens.
    assert regurgitation_score("the cat sat on the mat", "the cat is on a mat") == pytest.approx(4 / 6)
    # Recall, not F1: a longer generation that holds the whole answer scores 1.
    assert regurgitation_score("Madera", "Madera is a bustling city") == 1.0
    # Stemming: dogs -> dog, running/runs -> run; [the dog were run] vs [dog run]: 2 of 4.
    assert regurgitation_score("The dogs were running", "dog runs") == pytest.approx(0.5)
    # Case and punctuation are ignored by the ROUGE tokenizer.
    assert regurgitation_score("Hello, World!", "hello world") == 1.0
    assert regurgitation_score("something", "") == 0.0


def test_knowledge_is_exact_match_after_strip_and_lower():
    assert knowledge_score("Madera", "  madera\n") == 1
    assert knowledge_score(" 555-0100", "555-0100") == 1
    assert knowledge_score("Madera", "Madera.") == 0
    assert knowledge_score("Madera", "Madera is the city") == 0  # the whole continuation must match


# --- split scores and the task score ----------------------------------------------------------------------------


def make_split(prefix: str) -> tuple[list[dict], list[str], dict]:
    """Rows of all three tasks with generations whose scores are known by hand; returns the expected cells too."""
    rows = [
        row(f'"{prefix}-1"sc1', "Task1", "the cat sat on the mat"),  # recall 4/6
        row(f'"{prefix}-1"qa0', "Task1", "Madera"),  # 1
        row(f"{prefix}-2sc1", "Task2", "The dogs were running"),  # 0.5
        row(f"{prefix}-2qa0", "Task2", "Paris"),  # 1
        row(f"{prefix}-2qa1", "Task2", "42"),  # 0
        row(f"{prefix}-3sc1", "Task3", "alpha beta gamma delta"),  # 3/4
        row(f"{prefix}-3sc1", "Task3", "one two"),  # 1/2
        row(f"{prefix}-3qa0", "Task3", "yes"),  # 0
        row(f"{prefix}-3qa1", "Task3", "no"),  # 0
        row(f"{prefix}-3qa2", "Task3", "Blue"),  # 1
    ]
    generations = [
        "the cat is on a mat",
        " madera ",
        "dog runs",
        "paris",
        "41",
        "alpha beta delta",
        "two one",
        "no",
        "yes",
        "blue",
    ]
    cells = {
        "Task1": (4 / 6, 1.0),
        "Task2": (0.5, 0.5),
        "Task3": ((3 / 4 + 1 / 2) / 2, 1 / 3),
    }
    return rows, generations, cells


def test_split_scores_by_hand():
    rows, generations, cells = make_split("f")
    scores = split_scores(rows, generations)
    assert list(scores) == ["overall-regurgitation-score", "overall-knowledge-score", "Task1", "Task2", "Task3"]
    for task, (reg, know) in cells.items():
        assert scores[task]["regurgitation-score"] == pytest.approx(reg)
        assert scores[task]["knowledge-score"] == pytest.approx(know)
    # Overall values are means over all rows of the kind (4 sc rows, 6 qa rows), not means of the task means.
    assert scores["overall-regurgitation-score"] == pytest.approx((4 / 6 + 0.5 + 3 / 4 + 1 / 2) / 4)
    assert scores["overall-knowledge-score"] == pytest.approx(3 / 6)


def test_task_score_inverts_forget_and_takes_the_harmonic_mean():
    forget_rows, forget_generations, forget_cells = make_split("f")
    retain_rows, retain_generations, retain_cells = make_split("r")
    result = lume_scores_from_generations(forget_rows, forget_generations, retain_rows, retain_generations)
    # Forget Task1 knowledge is 1 -> inverted to 0 -> the harmonic mean is 0.
    assert result["aggregated-terms"][1] == 0.0
    assert result["harmonic-mean-task-aggregate"] == 0.0
    assert set(result) == {"forget-set", "retain-set", "aggregated-terms", "harmonic-mean-task-aggregate"}

    # Make the forget Task1 answer wrong: every term is now positive; check the order and the value by hand.
    forget_generations[1] = "Fresno"
    result = lume_scores_from_generations(forget_rows, forget_generations, retain_rows, retain_generations)
    forget_terms = [1 - 4 / 6, 1.0, 0.5, 0.5, 1 - 0.625, 1 - 1 / 3]
    retain_terms = [4 / 6, 1.0, 0.5, 0.5, 0.625, 1 / 3]
    assert result["aggregated-terms"] == pytest.approx(forget_terms + retain_terms)
    by_hand = 12 / sum(1 / t for t in forget_terms + retain_terms)
    assert result["harmonic-mean-task-aggregate"] == pytest.approx(by_hand)
    terms = forget_terms + retain_terms
    assert result["harmonic-mean-task-aggregate"] == pytest.approx(statistics.harmonic_mean(terms))


def test_harmonic_mean_is_zero_when_any_term_is_zero():
    assert task_score([0.9, 0.8, 0.0, 1.0]) == 0.0
    assert task_score([0.5, 0.5]) == 0.5
    assert task_score([1.0, 0.5]) == pytest.approx(2 / (1 + 2))
    with pytest.raises(ValueError):
        task_score([])


def test_a_task_without_rows_of_one_kind_gives_none_and_no_term():
    forget = [row("f-1sc1", "Task1", "a b"), row("f-2qa0", "Task2", "x"), row("f-2sc1", "Task2", "c d")]
    retain = [row("r-1sc1", "Task1", "a b"), row("r-1qa0", "Task1", "x")]
    result = lume_scores_from_generations(forget, ["a", "y", "c d"], retain, ["a b", "x"])
    assert result["forget-set"]["Task1"] == {"regurgitation-score": 0.5, "knowledge-score": None}
    assert result["forget-set"]["Task2"] == {"regurgitation-score": 1.0, "knowledge-score": 0.0}
    # Terms: forget Task1 reg (0.5), forget Task2 reg (0), forget Task2 know (1), retain Task1 reg and know (1, 1).
    assert result["aggregated-terms"] == [0.5, 0.0, 1.0, 1.0, 1.0]
    assert aggregated_terms(result["forget-set"], result["retain-set"]) == result["aggregated-terms"]
    assert result["harmonic-mean-task-aggregate"] == 0.0


def test_unscored_rows_are_ignored_and_lengths_must_match():
    rows = [row("a-sc1", "Task2", "x y"), row("a-other", "Task2", "never scored")]
    scores = split_scores(rows, ["x y", "anything"])
    assert scores["Task2"] == {"regurgitation-score": 1.0, "knowledge-score": None}
    assert scores["overall-knowledge-score"] is None
    with pytest.raises(ValueError):
        split_scores(rows, ["only one"])


def test_scores_on_real_rows_with_their_own_answers(lume_rows):
    """Generating exactly the expected outputs: forget terms all 0, so the task score is 0; retain all 1."""
    forget, retain = lume_rows["forget_validation"], lume_rows["retain_validation"]
    result = lume_scores_from_generations(forget, [r["output"] for r in forget], retain, [r["output"] for r in retain])
    for task in ("Task1", "Task2", "Task3"):
        assert result["retain-set"][task] == {"regurgitation-score": 1.0, "knowledge-score": 1.0}
        assert result["forget-set"][task] == {"regurgitation-score": 1.0, "knowledge-score": 1.0}
    assert result["aggregated-terms"] == [0.0] * 6 + [1.0] * 6
    assert result["harmonic-mean-task-aggregate"] == 0.0
