"""The README's commands run as written: every ```bash and ```python block of README.md, then of the pages in docs/
(`DOCS`, in the order their sections had in the README before they moved there), each file's blocks in order.

A block is named by its file and line (`docs/audit.md:12-bash`). The README links every page of `DOCS`, and `DOCS` lists
every page under docs/, so that no page goes untested or unread; the relative links of all these files resolve.

The blocks run in a copy of the repository (its tracked and untracked, not ignored files), with `HOME`, `HF_HOME` and
the hf_unlearn cache under a temporary folder (the converted SmolLM2 is linked in, when there, so that it is not
converted again), `.venv` linked to the environment running the tests, and `../shared/data` beside the copy. Each block
may read what an earlier one wrote (`outputs/...`), as a reader following the README and then the docs would.

To stay within a few minutes, two things are shortened, and nothing else is changed:

- `../shared/data` is a reduced copy of the real data: the first 16 Task2 rows and 2 rows of Task1 and Task3 of each
  train split, 2 rows per task of each validation split, 4 MIA members and non-members, 1 MMLU test question per
  subject (the dev split whole, for the few-shot examples). The commands and their flags are the README's own.
- An HTML comment right before a block can say how the test runs it, each with the reason after a `|`:
  `<!-- test: skip | why -->` (not run), `<!-- test: env NAME=VALUE ... | why -->` (extra environment),
  `<!-- test: replace OLD => NEW | why -->` (OLD must occur in the block), `<!-- test: installed | why -->` (an
  install block: the test checks that what it installs is installed in this environment instead of installing it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, SHARED_DATA

README = REPO_ROOT / "README.md"
# The pages under docs/, in the order their sections had in the README: a page's blocks may use what the README's
# blocks, or an earlier page's, wrote (outputs/demo, outputs/npo, outputs/merged).
DOCS = ["docs/methods.md", "docs/deletion.md", "docs/compare.md", "docs/smollm2.md", "docs/evaluation.md",
        "docs/guarantees.md", "docs/distributed.md", "docs/audit.md", "docs/benchmarks.md", "docs/layout.md"]
FILES = ["README.md", *DOCS]
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
BLOCK = re.compile(r"((?:<!-- test: [^\n]*-->\n)*)```(bash|python)\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!-- test: (skip|env|replace|installed)\b(.*?)\|(.*?)-->")
MAX_SKIPPED = 6  # the Hub and GPU commands, the two-node command and the SLURM script (they need a cluster)
PROGRAMS = ("python", "python3", "pip", "hf-unlearn", "accelerate", "torchrun", "pytest")


@dataclass
class Block:
    line: int
    language: str
    code: str
    skip: str | None = None
    installed: bool = False
    env: dict[str, str] = field(default_factory=dict)
    replace: list[tuple[str, str]] = field(default_factory=list)
    file: str = "README.md"

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line}-{self.language}"


def readme_blocks(text: str | None = None, file: str = "README.md") -> list[Block]:
    """The blocks of `file` (a path relative to the repository root), or of `text` read as that file."""
    text = (REPO_ROOT / file).read_text() if text is None else text
    blocks = []
    for match in BLOCK.finditer(text):
        comments, language, code = match.groups()
        block = Block(text.count("\n", 0, match.start(2)) + 1, language, code, file=file)
        for line in comments.splitlines():
            directive = DIRECTIVE.fullmatch(line.strip())
            assert directive, f"{block.name}: a test comment must read <!-- test: KIND ... | reason -->: {line}"
            kind, argument, reason = (part.strip() for part in directive.groups())
            assert reason, f"{block.name}: the test comment gives no reason: {line}"
            if kind == "skip":
                block.skip = reason
            elif kind == "installed":
                block.installed = True
            elif kind == "env":
                block.env.update(item.split("=", 1) for item in argument.split())
            else:
                old, new = (part.strip() for part in argument.split("=>"))
                assert old in block.code, f"{block.name}: the replaced text {old!r} is not in the block"
                block.replace.append((old, new))
        blocks.append(block)
    return blocks


BLOCKS = [block for file in FILES if (REPO_ROOT / file).is_file() for block in readme_blocks(file=file)]


def test_the_readme_blocks_are_found_and_few_are_skipped():
    assert len(BLOCKS) >= 15 and {b.language for b in BLOCKS} == {"bash", "python"}
    skipped = [b for b in BLOCKS if b.skip]
    assert len(skipped) <= MAX_SKIPPED, [b.name for b in skipped]


def test_every_docs_page_is_linked_from_the_readme_and_tested():
    pages = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "docs").rglob("*.md"))
    assert len(set(DOCS)) == len(DOCS) and sorted(DOCS) == pages, \
        f"DOCS in tests/test_readme.py must list every page under docs/: DOCS={DOCS}, docs/ has {pages}"
    linked = {target.split("#")[0] for target in LINK.findall(FENCE.sub("", README.read_text()))}
    unlinked = [page for page in DOCS if page not in linked]
    assert not unlinked, f"README.md links no {unlinked}"


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    headings = re.findall(r"^#+ (.*)$", FENCE.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_relative_links_of_the_readme_and_docs_resolve():
    broken = []
    for file in FILES:
        path = REPO_ROOT / file
        for target in LINK.findall(FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            name, _, anchor = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{file}: {target}")
    assert not broken, broken


def test_the_layout_names_every_module_and_support_code_lives_apart():
    layout = (README.parent / "docs" / "layout.md").read_text().split("```")[1]
    package = REPO_ROOT / "hf_unlearn"
    names = {p.relative_to(REPO_ROOT).as_posix() for p in package.glob("*.py") if p.name != "__init__.py"}
    names |= {p.relative_to(REPO_ROOT).as_posix() + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    names -= {"hf_unlearn/support/"}  # its modules are named one by one
    names |= {p.relative_to(REPO_ROOT).as_posix() for p in (package / "support").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(n for n in names if not re.search(rf"^{re.escape(n)}\s", layout, re.M))
    assert not missing, f"docs/layout.md omits {missing}"
    library = layout.split("Support code", 1)[0]
    assert "support/" not in library and "hf_unlearn/support/tiny.py" in layout


def test_every_command_calls_the_project_environment_by_its_path():
    """No block needs an activated environment: each program comes from `.venv/bin/` (bar `python3 -m venv`)."""
    for block in BLOCKS:
        if block.language != "bash":
            continue
        for command in re.split(r"&&|\|\||;|\n", block.code.replace("\\\n", " ")):
            words = [w for w in command.split("#")[0].split() if not re.fullmatch(r"[A-Z_]+=\S*", w)]
            if words and words[0] in PROGRAMS:
                assert words[:3] == ["python3", "-m", "venv"], f"{block.name}: {words[0]} is not .venv/bin/{words[0]}"


def reduced_data(target: Path) -> None:
    """A small copy of `SHARED_DATA` in the same layout (see the module docstring)."""
    lume = SHARED_DATA / "lume"
    (target / "lume" / "mia").mkdir(parents=True)
    for path in sorted(lume.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
        quota = {"Task1": 2, "Task2": 16, "Task3": 2} if "train" in path.stem else dict.fromkeys(("Task1", "Task2", "Task3"), 2)
        kept = []
        for row in rows:
            if quota.get(row["task"], 0) > 0:
                quota[row["task"]] -= 1
                kept.append(row)
        (target / "lume" / path.name).write_text("".join(json.dumps(r) + "\n" for r in kept))
    for name in ("member", "nonmember"):
        lines = (lume / "mia" / f"{name}.jsonl").read_text().split("\n")[:4]
        (target / "lume" / "mia" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (target / "mmlu").mkdir()
    shutil.copy(SHARED_DATA / "mmlu" / "dev.jsonl", target / "mmlu" / "dev.jsonl")
    seen, test = set(), []
    for line in filter(str.strip, (SHARED_DATA / "mmlu" / "test.jsonl").read_text().split("\n")):
        subject = json.loads(line)["subject"]
        if subject not in seen:
            seen.add(subject)
            test.append(line)
    (target / "mmlu" / "test.jsonl").write_text("\n".join(test) + "\n")


def repository_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.fail(f"git ls-files failed in {REPO_ROOT}: {listed.stderr.strip()}")
    return [name for name in listed.stdout.split("\0") if name and (REPO_ROOT / name).is_file()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(repository copy, environment) shared by every block, in the order of FILES and of each file."""
    from hf_unlearn.cache import cache_root

    root = tmp_path_factory.mktemp("readme")
    repo = root / "repo"
    for name in repository_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, repo / name)
    (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    assert (repo / ".venv" / "bin" / "hf-unlearn").exists(), f"hf-unlearn is not installed in {sys.prefix}"
    reduced_data(root / "shared" / "data")
    cache = root / "cache"
    cache.mkdir()
    if (cache_root() / "models").is_dir():  # the converted SmolLM2: about 30 s to convert again
        (cache / "models").symlink_to(cache_root() / "models", target_is_directory=True)
    env = {
        **os.environ, "HOME": str(root / "home"), "HF_HOME": str(root / "hf_home"), "HF_UNLEARN_CACHE": str(cache),
        "HF_UNLEARN_SHARED_DATA": str(root / "shared" / "data"), "PYTHONPATH": str(repo),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    (root / "home").mkdir()
    return repo, env


def check_installed(block: Block) -> None:
    """What the block's `pip install` lines name is installed here: pinned versions, and the project's extras."""
    import configparser

    specs = re.findall(r"pip install (?:--no-deps |-e )?(\S+)", block.code)
    assert specs, f"{block.name} installs nothing"
    for spec in specs:
        spec = spec.strip("\"'")
        if spec.startswith(".["):  # this project (editable), with extras
            assert metadata.version("hf_unlearn")
            config = configparser.ConfigParser()
            config.read(REPO_ROOT / "setup.cfg")
            wanted = config["options"]["install_requires"].split()
            for extra in spec[2:-1].split(","):
                wanted += config["options.extras_require"][extra].split()
            for requirement in wanted:
                name = re.split(r"[<>=!\[ ]", requirement)[0]
                assert metadata.version(name), name
        else:
            name, _, version = spec.partition("==")
            assert metadata.version(name).split("+")[0] == version, (name, metadata.version(name))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block_runs(block, workspace):
    if block.skip:
        pytest.skip(block.skip)
    if block.installed:
        check_installed(block)
        return
    repo, env = workspace
    code = block.code
    for old, new in block.replace:
        code = code.replace(old, new)
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = repo.parent / "blocks" / f"{block.file.replace('/', '_')}-line{block.line}.py"
        script.parent.mkdir(exist_ok=True)
        script.write_text(code)
        command = [str(repo / ".venv" / "bin" / "python"), str(script)]
    result = subprocess.run(command, cwd=repo, env={**env, **block.env}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{block.name} failed:\n{code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n" \
                                   f"{result.stderr[-5000:]}"
