"""Plain documents (a person's records, a copyrighted text) as LUME-style sentence-completion rows, and reading a file
of either.

The splitter (`documents_to_rows`) is what `hf-unlearn unlearn` applies to `.txt` files and to JSON-lines files whose
rows have a `text` field:

1. A document is split into sentences: a sentence ends at `.`, `!` or `?` (and any closing quotes or brackets) followed
   by white space, or at a line break.
2. Consecutive sentences are packed into passages of at most `max_words` words; a longer sentence is a passage of its
   own, cut every `max_words` words.
3. Each passage becomes one row: `input` is its text up to the sentence boundary closest to `prompt_fraction` of its
   words (or, in a one-sentence passage, up to that word), `output` the rest. The text is sliced, not re-joined, so
   the prompt is exactly the text the model saw. A passage of one word has no prompt and no continuation: it is
   refused, naming the document.
4. Row ids are `<document>-<k>sc0` (the LUME scorer reads a row's kind from the end of its id: these are all
   sentence completions, scored by ROUGE-L recall), `task` is `"documents"`, and `document` names the document the row
   came from, so an audit's relearning attack can hold out whole documents.

Plain documents give no question rows, so knowledge (exact match on questions) is not measured for them; add
LUME-style question rows (`id` ending in `qa<N>`) to measure it.

Error messages name the file, line or document number and the field, never the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .lume import DataValidationError, _read_jsonl_lines, check_row_types, read_text

DOCUMENT_TASK = "documents"
# A sentence ends after ., ! or ? (plus closing quotes/brackets) before white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]’”]*\s+|\n+")
_WORD = re.compile(r"\S+")
# Words whose full stop does not end a sentence (besides single letters, as in initials).
ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr mt no vs etc e.g i.e approx dept inc ltd co".split())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences of `text`, white space between them excluded."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].rsplit(None, 1)[-1:] or [""]
        word = before[0].rstrip(".").lower()
        if "\n" not in match.group(0) and before[0].endswith(".") and (word in ABBREVIATIONS or len(word) == 1):
            continue  # "Dr. Roe", "J. Roe": not a sentence end
        end = match.start() + len(match.group(0).rstrip())  # closing quotes stay with their sentence
        if text[start:end].strip():
            spans.append((start, end))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return [(s + len(text[s:e]) - len(text[s:e].lstrip()), e) for s, e in spans]


def passage_spans(text: str, max_words: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, sentence-boundary offsets inside) of passages of whole sentences, at most `max_words` words each
    (a longer sentence cut every `max_words` words)."""
    pieces: list[tuple[int, int]] = []
    for s, e in sentence_spans(text):
        words = list(_WORD.finditer(text, s, e))
        for i in range(0, len(words), max_words):
            chunk = words[i : i + max_words]
            pieces.append((chunk[0].start(), chunk[-1].end()))
    passages: list[tuple[int, int, list[int]]] = []
    count = 0
    for s, e in pieces:
        n = len(_WORD.findall(text, s, e))
        if passages and count + n <= max_words:
            start, _, bounds = passages[-1]
            passages[-1] = (start, e, bounds + [s])
            count += n
        else:
            passages.append((s, e, []))
            count = n
    if len(passages) > 1 and len(_WORD.findall(text, *passages[-1][:2])) < 2:  # a one-word tail joins the passage before
        start, _, bounds = passages[-2]
        passages[-2:] = [(start, passages[-1][1], bounds + [passages[-1][0]])]
    return passages


def completion_row(text: str, start: int, end: int, bounds: Sequence[int], prompt_fraction: float) -> tuple[str, str]:
    """(input, output) of one passage `text[start:end]`, cut at the sentence boundary nearest to `prompt_fraction` of
    its words, or at that word when the passage is one sentence."""
    words = list(_WORD.finditer(text, start, end))
    target = prompt_fraction * len(words)
    if bounds:
        def words_before(offset: int) -> int:
            return sum(w.start() < offset for w in words)

        cut = min(bounds, key=lambda b: (abs(words_before(b) - target), b))
    else:
        k = min(len(words) - 1, max(1, round(target)))
        cut = words[k].start()
    return text[start:cut].rstrip(), text[cut:end].strip()


def documents_to_rows(
    documents: Sequence[str],
    ids: Sequence[str] | None = None,
    max_words: int = 100,
    prompt_fraction: float = 0.5,
    source: str = "documents",
) -> list[dict]:
    """LUME-style sentence-completion rows (`id`, `input`, `output`, `task`, `document`) from plain documents; see the
    module docstring for the rules. `ids` name the documents (default `doc0`, `doc1`, ...)."""
    if max_words < 2:
        raise ValueError(f"max_words must be at least 2, got {max_words}")
    if not 0 < prompt_fraction < 1:
        raise ValueError(f"prompt_fraction must be in (0, 1), got {prompt_fraction}")
    ids = list(ids) if ids is not None else [f"doc{i}" for i in range(len(documents))]
    if len(ids) != len(documents):
        raise ValueError(f"{len(documents)} documents but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise DataValidationError(f"{source}: two documents have the same id; each document needs its own.")
    rows = []
    for number, (doc_id, text) in enumerate(zip(ids, documents), start=1):
        if len(_WORD.findall(text)) < 2:
            raise DataValidationError(
                f"{source}, document {number}: fewer than 2 words, so there is no prompt and continuation to make; "
                "join it to a neighbouring document or give it as an input/output row."
            )
        for k, (s, e, bounds) in enumerate(passage_spans(text, max_words)):
            prompt, answer = completion_row(text, s, e, bounds, prompt_fraction)
            rows.append({"id": f"{doc_id}-{k}sc0", "input": prompt, "output": answer, "task": DOCUMENT_TASK,
                         "document": str(doc_id)})
    return rows


def paragraphs(text: str) -> list[str]:
    """The documents of a `.txt` file: blocks separated by one or more blank lines."""
    return [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]


def read_documents(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, ids) of the documents in a `.txt` file (one per paragraph) or a JSON-lines file with a `text` field
    (or `document`, as in LUME's MIA files) and an optional `id`. Rows with `question` and `answer` (TOFU's files)
    are the document `load_rows` makes of such a row (its prompt, a space, its answer): unseen documents in the forget
    documents' own form."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"Data file not found: {path}.")
    if path.suffix == ".txt":
        texts = paragraphs(read_text(path))
        if not texts:
            raise DataValidationError(f"{path} is empty: it holds no documents.")
        return texts, [f"{path.stem}{i}" for i in range(len(texts))]
    texts, ids = [], []
    for lineno, row in _read_jsonl_lines(path):
        converted = _from_question_row(row)
        if converted is not row and "text" not in row and "document" not in row:  # the document `load_rows` makes
            row = {**row, "text": row_text(converted)}
        field = "text" if "text" in row or "document" not in row else "document"  # LUME's MIA files: 'document'
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            raise DataValidationError(
                f"{path}, line {lineno}: field '{field}' must be a non-empty string"
                + (f", got {type(text).__name__}" if text is not None else " (it is missing)") + "."
            )
        texts.append(text)
        ids.append(str(row["id"]) if row.get("id") is not None else f"{path.stem}{lineno}")
    return texts, ids


def document_kind(task: str) -> str:
    """The kind (group) of a whole document of LUME task `task`: the one name by which the anchored methods match a
    forget document (`rows_to_units`) with the calibration documents of its kind (`document_kinds`, the demo)."""
    return f"{task}/document"


def document_kinds(path: str | Path) -> dict[str, str] | None:
    """Each document's kind (`document_kind`), as `rows_to_units` names a forget document's, where every row of a
    JSON-lines file names its `task` (LUME's MIA files do): method `"anchored"` then measures the unseen level of
    each kind on the calibration documents of that kind. None for a `.txt` file or where a row names no task."""
    path = Path(path)
    if path.suffix == ".txt":
        return None
    texts, _ = read_documents(path)
    tasks = [row.get("task") for _, row in _read_jsonl_lines(path)]
    if not all(isinstance(task, str) and task for task in tasks):
        return None
    return {text: document_kind(task) for text, task in zip(texts, tasks)}


def row_text(row: Mapping) -> str:
    """The whole text behind a prompt/answer row: `input + " " + output` (LUME's documents are exactly that)."""
    return f"{row['input']} {row['output']}"


def question_prompt(question: str) -> str:
    """TOFU's plain prompt (`hf_unlearn.metrics.tofu.tofu_prompt` without a chat template)."""
    return f"Question: {question}\nAnswer: "


def _from_question_row(row: dict) -> dict:
    """A TOFU row (`question`, `answer`, no `input`/`output`) as a row: TOFU's plain prompt as `input`, the answer as
    `output`, a paraphrased question in the same prompt form. Other rows pass unchanged."""
    if "input" in row or "output" in row or "question" not in row or "answer" not in row:
        return row
    question = row["question"]  # not a string: left as it is, for the row checks to name
    out = {"input": question_prompt(question) if isinstance(question, str) else question, "output": row["answer"]}
    if isinstance(row.get("paraphrased_question"), str):
        out["paraphrased_input"] = question_prompt(row["paraphrased_question"])
    return {**out, **{k: row[k] for k in ("id", "task", "document") if k in row}}


def load_rows(path: str | Path, name: str, max_words: int = 100, prompt_fraction: float = 0.5) -> tuple[list[dict], list[str]]:
    """(rows, documents) of a forget, retain or evaluation file for `hf-unlearn unlearn`.

    - `.txt`, or JSON lines with a `text` (or `document`) field: plain documents, split by `documents_to_rows`;
    - JSON lines with `input` and `output`: LUME-style rows, checked as `load_lume` checks them. A row without an `id`
      gets `<file>-<line>sc0` (scored as a sentence completion), one without a `task` gets `"rows"`;
    - JSON lines with `question` and `answer` (TOFU's files): rows whose `input` is TOFU's plain prompt
      (`Question: ...\nAnswer: `), scored as sentence completions (ROUGE-L recall, TOFU's own metric).

    `documents` are the whole texts behind the rows (each plain document; for LUME-style rows, each
    sentence-completion row's input and output joined), the member documents of the membership-inference attack.
    `name` ("forget", "retain", ...) is used in messages.
    """
    path = Path(path)
    if path.suffix == ".txt":
        texts, ids = read_documents(path)
        return documents_to_rows(texts, ids, max_words, prompt_fraction, source=f"{name} file {path}"), texts
    lines = _read_jsonl_lines(path) if path.is_file() else None
    if lines is None:
        raise DataValidationError(f"{name} file not found: {path}.")
    lines = [(lineno, _from_question_row(row)) for lineno, row in lines]
    has_rows = ["input" in row or "output" in row for _, row in lines]
    if not any(has_rows):
        if all("text" in row or "document" in row for _, row in lines):
            texts, ids = read_documents(path)
            return documents_to_rows(texts, ids, max_words, prompt_fraction, source=f"{name} file {path}"), texts
        lineno, row = next((n, r) for n, r in lines if "text" not in r and "document" not in r)
        raise DataValidationError(
            f"{path}, line {lineno}: expected LUME-style rows (fields 'input' and 'output') or documents (field "
            f"'text'); this row has fields {sorted(row)}."
        )
    rows = []
    for lineno, row in lines:
        row = dict(row)
        row.setdefault("id", f"{path.stem}-{lineno}sc0")
        row.setdefault("task", "rows")
        rows.append((f"line {lineno}", row))
    check_row_types(rows, str(path))
    out = [row for _, row in rows]
    from ..metrics.lume import SENTENCE_COMPLETION, row_kind

    documents = [row_text(r) for r in out if row_kind(str(r["id"])) == SENTENCE_COMPLETION]
    return out, documents


def document_of(row: Mapping, index: int) -> str:
    """The document a row comes from: its `document` field (rows made from plain documents), else its id without the
    `sc<N>`/`qa<N>` suffix (LUME), else its index."""
    from ..metrics.lume import row_kind

    if row.get("document") is not None:
        return str(row["document"])
    row_id = str(row.get("id", ""))
    return row_id[:-3] if row_kind(row_id) is not None else f"row{index}"


def rows_to_documents(rows: Sequence[Mapping], questions: bool = True) -> list[str]:
    """The texts of `rows_to_units` (see there)."""
    return [text for text, _ in rows_to_units(rows, questions)]


def rows_to_units(rows: Sequence[Mapping], questions: bool = True) -> list[tuple[str, str]]:
    """Whole texts behind prompt/answer rows, for training on documents (`forget_unit="documents"`).

    Rows are grouped into documents by `document_of` (first appearance order). A document's sentence-completion rows
    (and rows of no known kind) are joined back into its text, each as `input + " " + output` (LUME's documents are
    exactly that), in row order; each question row becomes a text of its own, `input + " " + output`, so the facts
    asked about are trained on as well (`questions=False` leaves them out: the documents alone, as a membership attack
    scores them). A row without an id is a document of its own.

    Each text comes with its group, `"<task>/document"` or `"<task>/question"` (`task` as the row says, "rows"
    without one): texts of different kinds have different unseen levels (a question and its short answer are far less
    predictable than a document), so method `"anchored"` measures each group's level on its own.
    """
    from ..metrics.lume import QUESTION_ANSWERING, row_kind

    texts: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    question_units: list[tuple[str, str]] = []
    for index, row in enumerate(rows):
        text = row_text(row).strip()
        task = str(row.get("task") or "rows")
        if row_kind(str(row.get("id", ""))) == QUESTION_ANSWERING:
            question_units.append((text, f"{task}/question"))
        else:
            key = document_of(row, index)
            texts.setdefault(key, []).append(text)
            kinds.setdefault(key, document_kind(task))
    return [(" ".join(parts), kinds[key]) for key, parts in texts.items()] + (question_units if questions else [])


def document_texts(data, name: str) -> list[str]:
    """The texts of `document_units` (see there)."""
    return document_units(data, name)[0]


def document_units(data, name: str) -> tuple[list[str], list[str] | None]:
    """(texts, groups) of a forget or calibration set given as a list of strings, or a `datasets.Dataset` (or list of
    dicts) with a `text` (or `document`) column and an optional `group` column, or with `input`/`output` rows
    (`rows_to_units`: grouped by task and kind). `groups` is None where the data names none."""
    if isinstance(data, str):
        raise DataValidationError(f"{name}: expected documents (a list of strings or a dataset), got one string.")
    columns = set(getattr(data, "column_names", None) or (data[0].keys() if len(data) and isinstance(data[0], Mapping)
                                                          else ()))
    column = (lambda f: list(data[f]) if hasattr(data, "column_names") else [row.get(f) for row in data])  # noqa: E731
    groups = None
    if not columns:
        texts = list(data)
    elif "text" in columns or "document" in columns:
        texts = column("text" if "text" in columns else "document")
        if "group" in columns:
            groups = [str(g) for g in column("group")]
    elif {"input", "output"} <= columns:
        rows = data.to_list() if hasattr(data, "to_list") else list(data)
        check_row_types([(f"row {i}", dict(r)) for i, r in enumerate(rows)], name)
        units = rows_to_units(rows)
        texts, groups = [t for t, _ in units], [g for _, g in units]
    else:
        raise DataValidationError(
            f"{name}: expected a 'text' (or 'document') column, or 'input' and 'output' rows; got columns "
            f"{sorted(columns)}."
        )
    for number, text in enumerate(texts, start=1):
        if not isinstance(text, str) or not text.strip():
            raise DataValidationError(f"{name}: document {number} must be a non-empty string.")
    if not texts:
        raise DataValidationError(f"{name} is empty: it holds no documents.")
    return texts, groups
