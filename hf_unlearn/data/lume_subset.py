"""Which LUME documents a comparison uses: an experiment file's `lume:` section (`hf_unlearn.compare`).

LUME's splits hold rows (sentence completions `...sc<N>` and questions `...qa<N>`) of documents of three tasks; its
`mia/member.jsonl` has the whole texts of the forget_train Task3 documents that are membership-inference members,
`mia/nonmember.jsonl` Wikipedia documents. `LumeSubset` picks, in file order:

- of each split, the rows of the first `docs_per_task` documents of each task, except forget_train Task3: its first
  `members` documents that are in `mia/member.jsonl` (the attack's members, their whole texts from there);
- `calibration`: rows of forget_train documents the model never saw, of the forget set's mix (the next
  `docs_per_task` Task1 and Task2 documents and the next `calibration` Task3 members after the chosen ones), which
  steer the anchored method and the stopping rule;
- `evaluation`: the whole texts of the `evaluation` Task3 members after those, the reported attack's nonmembers
  (documents of the forget documents' own kind; never used in training or stopping);
- `nonmembers`: without `evaluation` documents, the first `nonmembers` Wikipedia documents of `mia/nonmember.jsonl`
  are the attack's nonmembers instead (the task's own MIA set: other text than the members);
- `general_documents`: Wikipedia documents of `mia/nonmember.jsonl` after the first `skip_general`, held-out general
  text (its perplexity).

`write_lume_subset` writes them as the files `hf-unlearn unlearn` reads (forget, retain, eval_forget, eval_retain,
calibration, mia/, general_text) and returns the experiment's `data:` entries. Nothing is memorised here: which of
those files a target memorises is the `target:` recipe's choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .lume import read_jsonl

SPLITS = ("forget_train", "retain_train", "forget_validation", "retain_validation")
TASKS = ("Task1", "Task2", "Task3")
# The split each `data:` name comes from.
DATA_NAMES = {"forget": "forget_train", "retain": "retain_train", "eval_forget": "forget_validation",
              "eval_retain": "retain_validation"}


@dataclass
class LumeSubset:
    """An experiment's `lume:` section (see the module docstring; every count in documents).

    Parameters:
        data: the LUME folder (`forget_train.jsonl`, ..., `mia/member.jsonl`, `mia/nonmember.jsonl`).
        docs_per_task: documents per task of each split (forget_train Task3: `members`).
        members: forget_train Task3 documents, all MIA members.
        calibration: unseen Task3 members after those (with `docs_per_task` unseen Task1 and Task2 documents) that
            steer training and stopping; 0: none.
        evaluation: unseen Task3 members after the calibration ones: the reported attack's nonmembers; 0: none.
        nonmembers: without `evaluation`, this many Wikipedia documents (the first of `mia/nonmember.jsonl`) are the
            attack's nonmembers; 0: no attack.
        general_documents: Wikipedia documents as held-out general text; 0: none.
        skip_general: Wikipedia documents skipped before those (the ones a target memorised beside the rows).
    """

    data: str
    docs_per_task: int = 2
    members: int = 4
    calibration: int = 0
    evaluation: int = 0
    nonmembers: int = 0
    general_documents: int = 0
    skip_general: int = 0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "data" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"lume.{f.name}: a whole number >= 0, got {value!r}")
        if self.members < 1 or self.docs_per_task < 1:
            raise ValueError("lume.members and lume.docs_per_task: at least 1")
        if self.evaluation and self.nonmembers:
            raise ValueError("lume.nonmembers: the attack's nonmembers are the evaluation documents or Wikipedia "
                             "documents, not both")


def document_stem(row_id: str) -> str:
    """The document a LUME row belongs to: its id without the `sc<N>` / `qa<N>` suffix."""
    return str(row_id)[:-3]


def _stems(rows: list[dict], task: str, only: set[str] | None = None) -> list[str]:
    """The documents of `task` in file order (only those in `only`, where given)."""
    return list(dict.fromkeys(document_stem(r["id"]) for r in rows if r["task"] == task
                              and (only is None or document_stem(r["id"]) in only)))


def _rows_of(rows: list[dict], stems: list[str]) -> list[dict]:
    chosen = set(stems)
    return [{k: r[k] for k in ("id", "input", "output", "task")} for r in rows if document_stem(r["id"]) in chosen]


def select_lume_subset(spec: LumeSubset) -> dict[str, Any]:
    """The subset: `rows` per split, `members` (whole texts), `calibration_rows`, `evaluation` (whole texts) and
    `general` (Wikipedia texts). Too few documents anywhere is refused, naming the field."""
    folder = Path(spec.data)
    member_docs = {row["id"]: row["document"] for row in read_jsonl(folder / "mia" / "member.jsonl")}
    rows: dict[str, list[dict]] = {}
    members: list[str] = []
    calibration: list[str] = []
    evaluation: list[str] = []
    for split in SPLITS:
        all_rows = read_jsonl(folder / f"{split}.jsonl")
        chosen: list[dict] = []  # task by task, each in file order (the order the rows are trained and scored in)
        for task in TASKS:
            restricted = split == "forget_train" and task == "Task3"
            stems = _stems(all_rows, task, set(member_docs) if restricted else None)
            taken = spec.members if restricted else spec.docs_per_task
            if len(stems) < taken:
                raise ValueError(f"lume.{'members' if restricted else 'docs_per_task'}: {split} has {len(stems)} "
                                 f"{task} document(s), fewer than {taken}")
            chosen += _rows_of([r for r in all_rows if r["task"] == task], stems[:taken])
            if split != "forget_train":
                continue
            extra = spec.calibration if task == "Task3" else spec.docs_per_task
            if spec.calibration:
                calibration += stems[taken: taken + extra]
            if restricted:
                members = [member_docs[s] for s in stems[:taken]]
                start = taken + (extra if spec.calibration else 0)
                evaluation = stems[start: start + spec.evaluation]
                if len(evaluation) < spec.evaluation or (spec.calibration and len(calibration) < 2 * spec.docs_per_task
                                                         + spec.calibration):
                    raise ValueError(f"lume.calibration + lume.evaluation: forget_train has {len(stems) - taken} "
                                     "Task3 members left after lume.members, fewer than asked for")
        rows[split] = chosen
    forget_rows = read_jsonl(folder / "forget_train.jsonl")
    nonmembers = [row["document"] for row in read_jsonl(folder / "mia" / "nonmember.jsonl")]
    end = spec.skip_general + spec.general_documents
    if max(end, spec.nonmembers) > len(nonmembers):
        raise ValueError(f"lume.skip_general + lume.general_documents, lume.nonmembers: {max(end, spec.nonmembers)} "
                         f"Wikipedia documents asked for, {len(nonmembers)} exist")
    return {"rows": rows, "members": members, "calibration_rows": _rows_of(forget_rows, calibration),
            "evaluation": [member_docs[s] for s in evaluation] or nonmembers[:spec.nonmembers],
            "general": nonmembers[spec.skip_general: end]}


def _write(path: Path, lines: list[dict]) -> str:
    from ..cache import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in lines))


def write_lume_subset(spec: LumeSubset, folder: str | Path) -> dict[str, str]:
    """Write the subset into `folder` as `hf-unlearn unlearn`'s files; returns the experiment's `data:` entries
    (forget, retain, eval_forget, eval_retain; mia: members against the evaluation documents, or the Wikipedia
    nonmembers; calibration: one whole document per unseen document, as the stopping rule reads them;
    general_text)."""
    from .documents import rows_to_documents

    folder = Path(folder)
    subset = select_lume_subset(spec)
    data = {name: _write(folder / f"{name}.jsonl", subset["rows"][split]) for name, split in DATA_NAMES.items()}
    if spec.evaluation or spec.nonmembers:
        _write(folder / "mia" / "member.jsonl", [{"document": d} for d in subset["members"]])
        _write(folder / "mia" / "nonmember.jsonl", [{"document": d} for d in subset["evaluation"]])
        data["mia"] = str((folder / "mia").resolve())
    if spec.calibration:
        documents = rows_to_documents(subset["calibration_rows"], questions=False)
        data["calibration"] = _write(folder / "calibration.jsonl", [{"text": d} for d in documents])
    if spec.general_documents:
        data["general_text"] = _write(folder / "general_text.jsonl", [{"text": d} for d in subset["general"]])
    return data
