"""Probe rows: the same facts asked differently, to see whether forgetting holds beyond the exact prompts.

- `prefix_rows`: sentence-completion rows (ids ending in `sc<N>`) whose prompt is cut to a fraction of its words;
  the expected continuation becomes the words cut off plus the original answer.
- `paraphrase_rows`: question rows asked through their paraphrase, where the data has one (TOFU's
  `paraphrased_question`, or a `paraphrased_input` field), expected to give the same answer.

Both return plain `{"id", "input", "output"}` rows; `regurgitation` scores generations against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..metrics.lume import SENTENCE_COMPLETION, regurgitation_score, row_kind

PARAPHRASE_FIELDS = ("paraphrased_input", "paraphrased_question")


def prefix_rows(rows: Sequence[Mapping], fraction: float) -> list[dict]:
    """Each sentence-completion row with its prompt cut to the first `fraction` of its words (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = []
    for row in rows:
        if row_kind(str(row.get("id", ""))) != SENTENCE_COMPLETION:
            continue
        words = row["input"].split(" ")
        keep = max(1, round(len(words) * fraction))
        rest = " ".join(words[keep:])
        out.append({"id": row["id"], "input": " ".join(words[:keep]),
                    "output": (rest + " " + row["output"]) if rest else row["output"]})
    return out


def paraphrase_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Rows that carry a paraphrased prompt, asked through it (the answer unchanged)."""
    out = []
    for index, row in enumerate(rows):
        for name in PARAPHRASE_FIELDS:
            if isinstance(row.get(name), str) and row[name].strip():
                out.append({"id": row.get("id", str(index)), "input": row[name], "output": row["output"]})
                break
    return out


def regurgitation(rows: Sequence[Mapping], generations: Sequence[str]) -> float:
    """Mean ROUGE-L recall of the generations against the rows' expected outputs."""
    if not rows:
        raise ValueError("regurgitation needs at least one row")
    return sum(regurgitation_score(r["output"], g) for r, g in zip(rows, generations)) / len(rows)
