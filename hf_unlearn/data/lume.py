"""Loading the LUME (SemEval-2025 Task 4) splits, and checking any forget/retain data before training.

Error messages name the file, line or row index and the field, never the row's text or id: the forget set is the
data a user is trying to erase.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from datasets import Dataset

LUME_COLUMNS = ("id", "input", "output", "task")
REQUIRED_COLUMNS = ("input", "output")
STRING_COLUMNS = ("input", "output", "task")  # an `id` may be a number, if it is one in every row
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DataValidationError(ValueError):
    """A data file or dataset that cannot be used for unlearning; the message names where and what."""


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, refusing a missing or empty file and invalid JSON with the file and line number."""
    return [row for _, row in _read_jsonl_lines(Path(path))]


def read_text(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark some editors write is not an error); a file in another encoding,
    or a binary one, is refused naming the file and the line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataValidationError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save it as UTF-8 (a binary file "
            "cannot be read)."
        ) from None


def read_mia_documents(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(members, nonmembers): the `document` field of `member.jsonl` and `nonmember.jsonl` in `folder` (LUME's MIA
    layout)."""
    out = []
    for name in ("member", "nonmember"):
        path = Path(folder) / f"{name}.jsonl"
        documents = []
        for lineno, row in _read_jsonl_lines(path):
            if not isinstance(row.get("document"), str):
                raise DataValidationError(f"{path}, line {lineno}: field 'document' must be a string.")
            documents.append(row["document"])
        out.append(documents)
    return out[0], out[1]


def _read_jsonl_lines(path: Path) -> list[tuple[int, dict]]:
    """`(line number, row)` for each non-blank line, so that later checks can name the line."""
    if not path.is_file():
        raise DataValidationError(f"Data file not found: {path}.")
    rows = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataValidationError(
                f"{path}, line {lineno}: invalid JSON ({err.msg} at column {err.colno}). "
                "Each line must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise DataValidationError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
        rows.append((lineno, row))
    if not rows:
        raise DataValidationError(f"{path} is empty: it holds no rows.")
    return rows


def _kind(value) -> str:
    """The Arrow-relevant kind of a JSON value: ints and floats share a column, a string and a number do not."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def check_row_types(rows: list[tuple[str, dict]], source: str) -> None:
    """Check every row before any Dataset is built from them: `input` and `output` are non-empty strings, `id` and
    `task` are strings when present, and every other field has one kind (string, number, ...) in all rows.

    `rows` are `(where, row)` pairs, `where` being e.g. `"line 3"`. pyarrow would otherwise fail on a mixed column
    with a message quoting another row's text; these messages name the source, the place and the field only.
    """
    first_kind: dict[str, tuple[str, str]] = {}  # field -> (kind, where it was first seen)
    ids: dict[str, str] = {}  # id -> where it was first seen
    for where, row in rows:
        for column in REQUIRED_COLUMNS:
            if column not in row:
                raise DataValidationError(
                    f"{source}, {where}: no field {column!r} (fields: {sorted(row)}). Each row needs 'input' and "
                    "'output'."
                )
        for column, value in row.items():
            if value is None:
                if column in REQUIRED_COLUMNS:
                    raise DataValidationError(f"{source}, {where}: field {column!r} is missing (null).")
                continue
            kind = _kind(value)
            if column in STRING_COLUMNS and kind != "string":
                raise DataValidationError(
                    f"{source}, {where}: field {column!r} must be a string, got {type(value).__name__}."
                )
            seen = first_kind.setdefault(column, (kind, where))
            if seen[0] != kind:
                raise DataValidationError(
                    f"{source}, {where}: field {column!r} is a {kind}, but a {seen[0]} at {seen[1]}; a field must have "
                    "one type in every row."
                )
        if not row["output"].strip():
            raise DataValidationError(f"{source}, {where}: field 'output' is empty; nothing to learn or unlearn.")
        if isinstance(row.get("id"), str):  # a repeated id would merge two rows' documents and scores
            first = ids.setdefault(row["id"], where)
            if first != where:
                raise DataValidationError(f"{source}, {where}: field 'id' repeats the id of {first}; ids must be "
                                          "unique.")


def validate_rows(dataset: Dataset, name: str, source: str | None = None) -> None:
    """Check that `dataset` has non-empty string `input` and `output` in every row.

    `name` says which set it is (e.g. `"forget_dataset"`); `source` (a file) is added to messages when known.
    Row numbers are 0-based indices into the dataset (for a JSON-lines file, line N is row N - 1 when it has no
    blank lines).
    """
    where = f"{name} ({source})" if source else name
    if len(dataset) == 0:
        raise DataValidationError(f"{where} is empty: unlearning needs at least one row.")
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataValidationError(
            f"{where} has no {' or '.join(repr(c) for c in missing)} column (columns: {dataset.column_names}). "
            "Each row needs an 'input' (the prompt) and an 'output' (the text to unlearn or retain); rename your "
            "columns with `dataset.rename_column`."
        )
    for column in REQUIRED_COLUMNS:
        for index, value in enumerate(dataset[column]):
            if value is None:
                raise DataValidationError(f"{where}, row {index}: field {column!r} is missing (null).")
            if not isinstance(value, str):
                raise DataValidationError(
                    f"{where}, row {index}: field {column!r} must be a string, got {type(value).__name__}."
                )
    empty = [i for i, v in enumerate(dataset["output"]) if not v.strip()]
    if empty:
        raise DataValidationError(f"{where}, row {empty[0]}: field 'output' is empty; nothing to learn or unlearn.")


def _rows_to_dataset(rows: list[tuple[str, dict]], source: str) -> Dataset:
    """An in-memory Dataset (no cache file: no copy of the forget set on disk) from checked rows."""
    import pyarrow as pa

    check_row_types(rows, source)
    try:
        dataset = Dataset.from_list([row for _, row in rows])
    except (pa.ArrowException, TypeError, ValueError) as err:  # nested values of mixed types; never quote the text
        raise DataValidationError(
            f"{source}: the rows cannot be stored as columns ({type(err).__name__}); check that each field, including "
            "nested lists and objects, has the same type in every row."
        ) from None
    validate_rows(dataset, Path(source).name, source=source)
    return dataset


def _local_split(root: Path, subset: str, split: str) -> Dataset:
    jsonl = root / f"{subset}_{split}.jsonl"
    parquet = root / "data" / f"{subset}_{split}-00000-of-00001.parquet"
    if jsonl.is_file():
        return _rows_to_dataset([(f"line {n}", row) for n, row in _read_jsonl_lines(jsonl)], str(jsonl))
    if parquet.is_file():
        import pyarrow.parquet as pq

        # Read into memory: Dataset.from_parquet would write an Arrow copy of the forget set into the datasets cache.
        rows = pq.read_table(parquet).to_pylist()
        return _rows_to_dataset([(f"row {i}", row) for i, row in enumerate(rows)], str(parquet))
    raise DataValidationError(
        f"No {subset} {split!r} split in {root}: expected {jsonl.name} or data/{parquet.name} (the Hub release's "
        "layout)."
    )


def _download_release(repo_id: str, split: str, folder: Path) -> None:
    """Download the Hub release's two parquet files of `split` into `folder` (a temporary folder, not the Hub cache)."""
    from huggingface_hub import hf_hub_download

    for subset in ("forget", "retain"):
        hf_hub_download(repo_id, f"data/{subset}_{split}-00000-of-00001.parquet", repo_type="dataset",
                        local_dir=folder)


def load_lume(path_or_repo_id: str | os.PathLike, split: str = "train") -> tuple[Dataset, Dataset]:
    """Load the LUME forget and retain sets of one split (`"train"` or `"validation"`).

    `path_or_repo_id` is a local folder holding `forget_{split}.jsonl` / `retain_{split}.jsonl` (like
    `../shared/data/lume`) or the Hub release's `data/{forget,retain}_{split}-00000-of-00001.parquet`, or else a Hub
    dataset repo id (e.g. the organisers' gated `llmunlearningsemeval2025organization/semeval25-unlearning-dataset-
    public`) in that layout. Returns `(forget, retain)` as in-memory `datasets.Dataset`s with columns
    `id, input, output, task` (and whatever else the files hold).

    Nothing is cached: the files are read into memory (no Arrow copy in the datasets cache), and a Hub release is
    downloaded into a temporary folder that is deleted before returning (not into the Hub cache). A name that is not
    an existing folder and does not look like `owner/name` is reported as a missing folder, never sent to the Hub.
    Every row's field types are checked before a Dataset is built; errors name the file, line (or parquet row) and
    field, never the row's text.
    """
    root = Path(path_or_repo_id).expanduser()
    if root.is_dir():
        return _local_split(root, "forget", split), _local_split(root, "retain", split)
    name = str(path_or_repo_id)
    if root.exists() or not HUB_ID.match(name):  # looks like a path: never turn a mistyped one into a Hub request
        raise DataValidationError(f"LUME data folder not found: {name}.")
    import tempfile

    # Downloaded into a temporary folder and read into memory, so no copy of the forget set outlives this call (the
    # Hub cache and `load_dataset` would keep one under HOME).
    with tempfile.TemporaryDirectory(prefix="hf_unlearn-") as tmp:
        try:
            _download_release(name, split, Path(tmp))
        except Exception as err:  # the Hub's errors name the repo and file, never the data
            raise DataValidationError(
                f"{name} is neither a local folder nor a readable Hub dataset with the LUME release's layout "
                f"(data/forget_{split}-00000-of-00001.parquet): {type(err).__name__}: {err}"
            ) from None
        return _local_split(Path(tmp), "forget", split), _local_split(Path(tmp), "retain", split)
