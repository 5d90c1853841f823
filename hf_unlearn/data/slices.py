"""A slice of a JSON-lines file, `{file: X.jsonl, rows: N, skip: M}` in an experiment file: its rows M+1 to M+N, written
as a file of their own (keyed by its contents like any data file), so an experiment can take part of a large file
(TOFU's retain90, LUME's Wikipedia nonmembers) without a copy of it beside the experiment. A list of files and slices
is their rows one after the other, in one file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Slice:
    file: str
    rows: int | None  # None: every row after `skip`
    skip: int = 0


def parse_slice(value: Any, where: str) -> Slice:
    """`value` (a mapping) as a `Slice`; anything else is refused naming `where` (e.g. `exp.yaml: data.retain`)."""
    rows, skip = value.get("rows"), value.get("skip", 0)
    if not set(value) <= {"file", "rows", "skip"} or "file" not in value or any(
            isinstance(n, bool) or not isinstance(n, int) for n in (rows, skip)) or rows < 1 or skip < 0:
        raise ValueError(f"{where}: a file, or {{file: FILE.jsonl, rows: N}} (its first N rows, N >= 1; skip: M "
                         "starts after the first M)")
    if not str(value["file"]).endswith(".jsonl"):
        raise ValueError(f"{where}.file: rows are taken from a JSON-lines file (.jsonl)")
    return Slice(str(value["file"]), rows, skip)


def is_slice(value: Any) -> bool:
    return isinstance(value, Mapping)


def write_slices(pieces: list[Slice], out: Path, where: str) -> str:
    """Write the rows of `pieces` (each of a resolved path), one after the other, to `out` atomically; returns `out`'s
    resolved path. A missing file or one with too few rows is refused naming `where`."""
    lines: list[str] = []
    for i, piece in enumerate(pieces):
        here = f"{where}[{i}]" if len(pieces) > 1 else where
        if not Path(piece.file).is_file():
            raise FileNotFoundError(f"{here}: {piece.file} does not exist")
        rows = [line for line in Path(piece.file).read_text(encoding="utf-8").splitlines() if line.strip()]
        end = len(rows) if piece.rows is None else piece.skip + piece.rows
        if len(rows) < end:
            raise ValueError(f"{here}: {piece.file} has {len(rows)} rows, fewer than rows: {piece.rows}"
                             + (f" after skip: {piece.skip}" if piece.skip else ""))
        lines += rows[piece.skip: end]
    from ..cache import write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, "\n".join(lines) + "\n")


def write_slice(piece: Slice, out: Path, where: str) -> str:
    """`write_slices` of one slice."""
    return write_slices([piece], out, where)
