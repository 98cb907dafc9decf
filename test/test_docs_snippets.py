"""The README's and docs/*.md's ```python blocks run, on the embedded default dataset, with tiny step counts.

Each Markdown file's blocks run in order in one fresh subprocess (one namespace, as a reader runs them; one torch
thread; a timeout), through ``test/_snippets.py``: ``range(<big>)`` loops and budget keywords (``pretrain_steps``,
``total_frames``, ...) are shrunk to a few steps, and the fragments listed in ``_snippets.PREPARE`` get the setup
they rely on (a run's exported ``policy.pt2``, Hydra's ``cfg``). A block that stops working fails here with a
traceback pointing at its Markdown line.

Blocks are left out only by a marker comment right before them in the Markdown, ``<!-- snippet: skip (reason) -->``
(never run) or ``<!-- snippet: slow (reason) -->`` (run with ``--runslow``), and every marker must be listed, with
its reason, in :data:`MARKED` below, so that none is added silently.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _snippets import (
    extract_python_blocks,
    PREPARE,
    Prepare,
    prepared_blocks,
    run_markdown_file,
    shrink_budgets,
    Snippet,
)

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOC_FILES_WITH_CODE = [p for p in DOC_FILES if extract_python_blocks(p)]

#: Every block that does not run by default, by (file, heading): (marker, reason).
MARKED: dict[tuple[str, str], tuple[str, str]] = {
    ("benchmarks.md", "Using the fast paths"): (
        "slow", "torch.compile of the update and of the reranking: minutes on a CPU"
    ),
}

#: Per file, seconds the subprocess may take (imports ~10 s; the trainer blocks a few seconds each). Generous for a
#: loaded 2-core machine; the slow (compiled) blocks get the long one.
TIMEOUT_S, SLOW_TIMEOUT_S = 300, 1200


@pytest.fixture(scope="module")
def default_dataset() -> str:
    """The embedded default dataset, regenerated into the user's cache on first use (~25-100 s), then reused.

    Done once here so that the subprocesses (which inherit ``TORCHRL_DTQL_CACHE`` / ``XDG_CACHE_HOME`` / ``HOME``)
    find it cached instead of each regenerating it.
    """
    from torchrl_dtql.data import DEFAULT_DATASET
    from torchrl_dtql.data.embedded import ensure_embedded_dataset

    ensure_embedded_dataset(DEFAULT_DATASET, progress=False)
    return DEFAULT_DATASET


# ------------------------------------------------------------------------------------------------- the docs run
@pytest.mark.parametrize("path", DOC_FILES_WITH_CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_of_the_docs_run(path: Path, default_dataset, tmp_path, request):
    include_slow = request.config.getoption("--runslow")
    snippets = extract_python_blocks(path)
    if not any(s.marker is None or (s.marker == "slow" and include_slow) for s in snippets):
        pytest.skip(f"every block of {path.name} is marked: {[(s.marker, s.reason) for s in snippets]}")
    result, ran = run_markdown_file(
        path, cwd=tmp_path, timeout=SLOW_TIMEOUT_S if include_slow else TIMEOUT_S, include_slow=include_slow
    )
    assert result.returncode == 0, (
        f"a ```python block of {path.relative_to(REPO)} failed (blocks run in order: {[s.where for s in ran]})\n"
        f"--- stdout (tail)\n{result.stdout[-3000:]}\n--- stderr (tail)\n{result.stderr[-6000:]}"
    )
    done = [line for line in result.stdout.splitlines() if line.startswith("=== ok in")]
    assert len(done) == len(prepared_blocks(ran)), result.stdout[-3000:]


def test_markers_are_the_listed_ones():
    """Each skip/slow marker in the docs is in MARKED with the same reason, and each entry of MARKED is a marker."""
    found = {
        (s.path.name, s.heading): (s.marker, s.reason)
        for path in DOC_FILES
        for s in extract_python_blocks(path)
        if s.marker is not None
    }
    assert found == MARKED


def test_every_prepared_fragment_exists_and_runs_by_default():
    blocks = {(s.path.name, s.heading): s for path in DOC_FILES for s in extract_python_blocks(path)}
    for key, entry in PREPARE.items():
        assert key in blocks, f"PREPARE entry {key} matches no ```python block"
        assert blocks[key].marker is None, f"{key} is prepared, so it should run: drop its marker"
        assert entry.why


def test_no_doc_block_reads_a_dataset_only_the_maker_makes():
    """A fresh install has no local/... dataset: the documented code uses DEFAULT_DATASET (or names the others in
    comments)."""
    for path in DOC_FILES:
        for s in extract_python_blocks(path):
            code_only = "\n".join(line.split("#", 1)[0] for line in s.code.splitlines())
            assert '"local/' not in code_only and "'local/" not in code_only, s.where


# ------------------------------------------------------------------------------------------------- the helper
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_extraction_lines_headings_markers_and_fences(tmp_path):
    md = _write(
        tmp_path,
        "# Title\n"  # 1
        "\n"  # 2
        "```bash\n"  # 3
        "# not a heading\n"  # 4
        "```\n"  # 5
        "## Part two ##\n"  # 6
        "<!-- snippet: skip (needs the hub) -->\n"  # 7
        "\n"  # 8
        "```python\n"  # 9
        "a = 1\n"  # 10
        "```\n"  # 11
        "Some text.\n"  # 12
        "```python\n"  # 13
        "b = 2\n"  # 14
        "\n"  # 15
        "c = 3\n"  # 16
        "```\n"  # 17
        "<!-- snippet: slow -->\n"  # 18
        "Text between: the marker no longer applies.\n"  # 19
        "- item\n"  # 20
        "  ```python\n"  # 21
        "  d = 4\n"  # 22
        "  ```\n"  # 23
        "````python\n"  # 24
        "```\n"  # 25
        "e = 5\n"  # 26
        "````\n",  # 27
    )
    snippets = extract_python_blocks(md)
    assert [(s.line, s.heading, s.marker, s.reason) for s in snippets] == [
        (9, "Part two", "skip", "needs the hub"),
        (13, "Part two", None, ""),
        (21, "Part two", None, ""),
        (24, "Part two", None, ""),
    ]
    assert [s.code for s in snippets] == ["a = 1\n", "b = 2\n\nc = 3\n", "d = 4\n", "```\ne = 5\n"]
    assert snippets[0].where == "doc.md:9 (Part two)"


def test_shrinking_keeps_lines_and_other_numbers():
    code = (
        "for step in range(50_000):\n"
        "    trainer = T(total_frames=1_050_000, optim_steps_per_batch=1000, pretrain_steps = 50_000,\n"
        "                lr=3e-4, num_candidates=1024, tau=0.005, steps=range(1))\n"
        "num_steps = 100\n"
        "my_pretrain_steps = 7_000\n"
        "x = range(3, 10)\n"
        "pretrain_steps=1.5e3\n"
    )
    assert shrink_budgets(code) == (
        "for step in range(2):\n"
        "    trainer = T(total_frames=4, optim_steps_per_batch=2, pretrain_steps = 2,\n"
        "                lr=3e-4, num_candidates=1024, tau=0.005, steps=range(1))\n"
        "num_steps = 4\n"
        "my_pretrain_steps = 7_000\n"
        "x = range(3, 10)\n"
        "pretrain_steps=1.5e3\n"
    )
    # total_frames stays a multiple of optim_steps_per_batch and above pretrain_steps: both phases run
    from _snippets import BUDGETS

    assert BUDGETS["total_frames"] % BUDGETS["optim_steps_per_batch"] == 0
    assert BUDGETS["total_frames"] > BUDGETS["pretrain_steps"] and BUDGETS["num_steps"] > BUDGETS["pretrain_steps"]


def test_prepared_blocks_order_and_bad_replacements():
    snippet = Snippet(Path("x.md"), 5, "H", 'load("outputs/.../p.pt2")\n')
    prepare = {("x.md", "H"): Prepare("why", setup="s = 1\n", replace={"outputs/.../p.pt2": "o/p.pt2"},
                                      check="assert s\n")}  # fmt: skip
    blocks = prepared_blocks([snippet], prepare=prepare)
    assert [b["where"] for b in blocks] == ["setup of x.md:5 (H)", "x.md:5 (H)", "check of x.md:5 (H)"]
    assert blocks[1]["code"] == 'load("o/p.pt2")\n' and blocks[1]["line"] == 5
    with pytest.raises(ValueError, match="cannot replace"):
        prepared_blocks([snippet], prepare={("x.md", "H"): Prepare("why", replace={"absent": "x"})})
    with pytest.raises(ValueError, match="cannot replace"):
        prepared_blocks([snippet], prepare={("x.md", "H"): Prepare("why", replace={"p.pt2": "a\nb"})})


def test_a_failing_block_fails_with_its_markdown_line(tmp_path):
    """Blocks share one namespace in order; a failure names the Markdown file and line, and stops the run."""
    md = _write(
        tmp_path,
        "# Doc\n```python\nvalue = 41\n```\n<!-- snippet: skip (would fail) -->\n```python\nraise SystemExit(3)\n```\n"
        "## Broken\n```python\nvalue += 1\nassert value == 41, 'documented output changed'\n```\n"
        "```python\nprint('never reached')\n```\n",
    )
    result, ran = run_markdown_file(md, cwd=tmp_path, prepare={}, timeout=120)
    assert result.returncode == 1 and len(ran) == 3
    assert f'File "{md.resolve()}", line 12' in result.stderr  # the assert's line in the Markdown file
    assert "assert value == 41, 'documented output changed'" in result.stderr  # its source, shown by the traceback
    assert "never reached" not in result.stdout
    with pytest.raises(ValueError, match="match no"):
        run_markdown_file(md, prepare={("doc.md", "No such heading"): Prepare("why")})


def test_command_line_lists_blocks(capsys):
    import _snippets

    assert _snippets.main(["--list", str(REPO / "docs" / "benchmarks.md")]) == 0
    out = capsys.readouterr().out
    assert "benchmarks.md:" in out and "slow (torch.compile" in out
