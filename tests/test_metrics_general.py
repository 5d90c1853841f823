"""hf_unlearn.metrics.general: perplexity and general knowledge against hand-made references on a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from hf_unlearn.data import DataValidationError
from hf_unlearn.metrics.general import general_knowledge, general_scores, perplexity, read_general_questions


def test_perplexity_is_exp_of_the_mean_token_nll_over_all_documents(tiny_model, tokenizer):
    import torch

    docs = ["The river runs to the sea past the old mill.", "Short one.", "A third document, of middling length."]
    total, count = 0.0, 0
    for doc in docs:  # one document at a time, the NLL of each token after the first
        ids = tokenizer(doc, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = tiny_model(ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="sum")
        total, count = total + float(nll), count + ids.shape[1] - 1
    assert perplexity(tiny_model, tokenizer, docs, batch_size=2) == pytest.approx(math.exp(total / count), rel=1e-4)
    with pytest.raises(ValueError):
        perplexity(tiny_model, tokenizer, [])


def test_general_knowledge_is_the_share_of_replies_containing_the_answer(tiny_model, tokenizer):
    from hf_unlearn.metrics import generate_one_at_a_time

    questions = [{"question": "Capital of France?", "answer": "Paris", "source": "facts"},
                 {"question": "Who wrote Hamlet?", "answer": "Shakespeare", "source": "authors"},
                 {"question": "Two plus two?", "answer": "four", "source": "facts"}]
    replies = generate_one_at_a_time(tiny_model, tokenizer, [f"Question: {q['question']}\nAnswer: " for q in questions],
                                     max_new_tokens=6)
    # make one answer certainly present: the first reply's first word
    first = replies[0].split()[0] if replies[0].split() else replies[0]
    if first:
        questions[0]["answer"] = first.upper()  # containment is case-insensitive
    hits = [q["answer"].lower() in r.lower() for q, r in zip(questions, replies)]
    scores = general_knowledge(tiny_model, tokenizer, questions, max_new_tokens=6, chat_template=False)
    assert scores["general/knowledge"] == pytest.approx(sum(hits) / 3)
    assert scores["general/facts"] == pytest.approx((hits[0] + hits[2]) / 2)
    assert scores["general/authors"] == float(hits[1])
    if first:
        assert hits[0]


def test_read_general_questions_names_the_line_never_the_text(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Secret question ZQX?", "answer": "yes", "source": "s"}) + "\n"
                    + json.dumps({"question": "Another ZQX?", "answer": 3}) + "\n")
    with pytest.raises(DataValidationError, match="line 2: field 'answer' must be a non-empty string, got int") as err:
        read_general_questions(path)
    assert "ZQX" not in str(err.value)
    path.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n")
    assert read_general_questions(path) == [{"question": "Q?", "answer": "A"}]
    with pytest.raises(DataValidationError, match="--general-questions: file not found"):
        read_general_questions(tmp_path / "none.jsonl")


def test_general_scores_has_the_parts_given(tiny_model, tokenizer):
    assert general_scores(tiny_model, tokenizer) == {}
    scores = general_scores(tiny_model, tokenizer, documents=["Some text of a document."])
    assert set(scores) == {"general/ppl"}
