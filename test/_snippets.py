"""Run the fenced ```python blocks of Markdown files, so that documented code that stops working fails a test.

A plain module (standard library only: no pytest, no torchrl_dtql), so that a CI script testing an installed wheel
can use it too::

    python test/_snippets.py README.md docs/*.md           # exit status 1 if a block fails
    python test/_snippets.py --runslow --list README.md    # list the blocks and what would be skipped

What it does:

* :func:`extract_python_blocks` finds each ```python block with the line of its opening fence, the heading it sits
  under, and the marker comment right before it, if any: ``<!-- snippet: skip (reason) -->`` (never run, e.g. it
  needs the hub or a GPU) or ``<!-- snippet: slow (reason) -->`` (run only when asked, e.g. it compiles for
  minutes). Blank lines may separate the marker from the fence.
* :func:`shrink_budgets` rewrites the step counts of a block to tiny ones without moving any line:
  ``range(<literal>)`` and the budget keywords of :data:`BUDGETS` (``pretrain_steps=50_000``, ``total_frames=...``).
* :func:`run_markdown_file` runs a file's blocks in order in one namespace (later blocks may use names defined by
  earlier ones, as a reader would), in a fresh subprocess with one torch thread and a timeout. Tracebacks point at
  the Markdown file's own lines. :data:`PREPARE` holds, per block, the setup a documented fragment relies on (a
  run's exported policy, Hydra's ``cfg``) and the placeholders to fill in.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = [
    "Snippet",
    "Prepare",
    "BUDGETS",
    "PREPARE",
    "extract_python_blocks",
    "shrink_budgets",
    "prepared_blocks",
    "run_markdown_file",
    "main",
]

#: Budget keywords (``name=<int>`` arguments and ``name = <int>`` assignments) and the tiny values they get. The
#: values keep the trainers' constraints: ``total_frames`` is a multiple of ``optim_steps_per_batch``, and
#: ``num_steps`` / ``total_frames`` exceed ``pretrain_steps`` so that both training phases run.
BUDGETS: dict[str, int] = {
    "total_frames": 4,
    "num_steps": 4,
    "gradient_steps": 4,
    "optim_steps_per_batch": 2,
    "pretrain_steps": 2,
    "lr_decay_steps": 2,
    "record_interval": 1,
    "record_frames": 10,
}
#: ``range(<literal>)`` loops run at most this many times.
MAX_RANGE = 2

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(skip|slow)\s*(?:\((.*)\))?\s*-->\s*$")
_RANGE = re.compile(r"\brange\(\s*(\d[\d_]*)\s*\)")


@dataclass(frozen=True)
class Snippet:
    """One fenced ```python block of a Markdown file.

    Attributes:
        path: the Markdown file.
        line: 1-based line number of the opening fence (the code starts on the next line).
        heading: the text of the closest heading above the block ("" if none).
        code: the block's source, dedented to its fence's indentation.
        marker: ``"skip"``, ``"slow"`` or ``None``, from a ``<!-- snippet: ... -->`` comment right before it.
        reason: the marker's reason, in parentheses.
    """

    path: Path
    line: int
    heading: str
    code: str
    marker: str | None = None
    reason: str = ""

    @property
    def where(self) -> str:
        """``README.md:42 (## DTQL in a TorchRL pipeline)``-style location for messages."""
        return f"{self.path.name}:{self.line} ({self.heading})"


@dataclass(frozen=True)
class Prepare:
    """What a documented fragment needs before it runs.

    Attributes:
        why: why the block is not self-contained (shown in listings).
        setup: code run (in the file's namespace) right before the block.
        replace: literal substrings of the block to replace (placeholders such as ``outputs/.../policy.pt2``),
            each of which must occur in it; the replacements must not add lines.
        check: code run right after the block, asserting that it did what it says.
    """

    why: str
    setup: str = ""
    replace: dict[str, str] = field(default_factory=dict)
    check: str = ""


def extract_python_blocks(path: str | os.PathLike) -> list[Snippet]:
    """The ```python blocks of a Markdown file, in order, with line numbers, headings and markers.

    Headings inside fenced blocks (``# a comment`` in a bash block) are not headings. Blocks tagged ``py``,
    ``python3`` or ``pycon`` are not picked up: only ``python``.

    Examples:
        >>> import tempfile
        >>> md = Path(tempfile.mkdtemp()) / "x.md"
        >>> _ = md.write_text("# T\\n\\n```bash\\n# no heading\\n```\\n<!-- snippet: skip (needs the hub) -->\\n"
        ...                   "```python\\nx = 1\\n```\\n")
        >>> [(s.line, s.heading, s.code, s.marker, s.reason) for s in extract_python_blocks(md)]
        [(7, 'T', 'x = 1\\n', 'skip', 'needs the hub')]
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    heading = ""
    marker: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            found = _MARKER.match(line)
            if found:
                marker = (found.group(1), (found.group(2) or "").strip())
            elif _HEADING.match(line):
                heading, marker = _HEADING.match(line).group(2), None
            elif line.strip():
                marker = None  # a marker applies to the very next block only
            i += 1
            continue
        indent, ticks, lang = fence.group(1), fence.group(2), fence.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        if lang == "python":
            kind, reason = marker if marker else (None, "")
            snippets.append(Snippet(path, start + 1, heading, "\n".join(body) + "\n", kind, reason))
        marker = None
    return snippets


def shrink_budgets(code: str, budgets: dict[str, int] | None = None, max_range: int = MAX_RANGE) -> str:
    """Rewrite step counts to tiny ones, keeping every line where it was (tracebacks keep the Markdown's lines).

    ``range(<int literal>)`` becomes ``range(max_range)`` when larger; ``name=<int literal>`` and
    ``name = <int literal>`` for the names of ``budgets`` (default :data:`BUDGETS`) get the budget's value when
    larger. Other numbers are left alone.

    Examples:
        >>> shrink_budgets("for step in range(1_000_000):\\n    f(pretrain_steps=50_000, lr=3e-4)\\nn = range(1)\\n")
        'for step in range(2):\\n    f(pretrain_steps=2, lr=3e-4)\\nn = range(1)\\n'
    """
    budgets = BUDGETS if budgets is None else budgets

    def small_range(match: re.Match) -> str:
        return f"range({min(int(match.group(1)), max_range)})"

    code = _RANGE.sub(small_range, code)
    if budgets:
        names = "|".join(sorted(map(re.escape, budgets), key=len, reverse=True))
        keyword = re.compile(rf"\b({names})(\s*=\s*)(\d[\d_]*)\b(?![.\de])")

        def small_budget(match: re.Match) -> str:
            name, eq, value = match.groups()
            return f"{name}{eq}{min(int(value), budgets[name])}"

        code = keyword.sub(small_budget, code)
    return code


# ------------------------------------------------------------------------------------------------------------------
# This repository's documented fragments: keyed by (Markdown file name, heading); one entry per block that is not
# self-contained. An entry that matches no block is an error (run_markdown_file raises), so the table cannot rot.
_HOPPER_POLICY_SETUP = """\
import os
import gymnasium as gym
from torchrl.data import Bounded
from torchrl_dtql import DTQLLoss, make_dtql_modules
from torchrl_dtql.export import export_policy, make_exportable_policy

_env = gym.make("Hopper-v5")
_loss = DTQLLoss(**make_dtql_modules(11, Bounded(-1.0, 1.0, shape=(3,)), hidden_dim=32), alpha=5.0)
os.makedirs("outputs/run", exist_ok=True)
export_policy(make_exportable_policy(_loss, num_candidates=16), "outputs/run/policy.pt2",
              metadata={"env_id": "Hopper-v5"})
observation, _ = _env.reset(seed=0)  # float64, as gymnasium returns it
"""

_HYDRA_CFG_SETUP = """\
from hydra import compose, initialize_config_module

with initialize_config_module(config_module="torchrl_dtql.trainers.recipes", version_base="1.3"):
    cfg = compose(config_name="dtql_offline", overrides=[
        "optim.pretrain_steps=2", "optim.gradient_steps=2", "trainer.optim_steps_per_batch=2",
        "trainer.progress_bar=false", "trainer.evaluation=null",
    ])
"""

PREPARE: dict[tuple[str, str], Prepare] = {
    ("README.md", "DTQL in a TorchRL pipeline"): Prepare(
        why="self-contained; the checks assert that it trained and that the reranking policy acts",
        check="""\
from tensordict import TensorDict
assert {"loss_actor", "loss_qvalue", "loss_value", "loss_diffusion"} <= set(metrics.keys()), metrics
_obs = rb.sample()["observation"][:3]
_act = policy(TensorDict(observation=_obs, batch_size=[3]))["action"]
assert _act.shape == (3, rb.metadata.action_spec.shape[-1])
""",
    ),
    ("example.md", "Deploying the policy"): Prepare(
        why="loads the policy.pt2 of a finished run: the setup exports an untrained Hopper policy there instead",
        setup=_HOPPER_POLICY_SETUP,
        replace={"outputs/.../policy.pt2": "outputs/run/policy.pt2"},
        check="assert action.shape == (3,) and act.metadata['env_id'] == 'Hopper-v5'",
    ),
    ("torchrl_integration.md", "What the trainer logs and how to evaluate"): Prepare(
        why="a fragment of main(cfg) above: the setup composes the same cfg with Hydra's compose API, tiny budgets",
        setup=_HYDRA_CFG_SETUP,
        check="""\
from pathlib import Path
assert trainer.collected_frames == 4, trainer.collected_frames
_rows = (Path(cfg.logger.log_dir) / cfg.logger.exp_name / "scalars" / "r_evaluation.csv").read_text().splitlines()
assert len(_rows) == 2, _rows  # the hook evaluated after each of the 2 logged batches
""",
    ),
    ("torchrl_integration.md", "Python API"): Prepare(
        why="self-contained; the check asserts that it ran both phases",
        check="""\
_stepper = trainer.optimization_stepper
assert trainer.collected_frames == 4 and _stepper.update_count == 4, (trainer.collected_frames, _stepper.update_count)
assert _stepper.pretrain_steps == 2  # so 2 pretraining and 2 main-phase steps
""",
    ),
}


def prepared_blocks(
    snippets: Sequence[Snippet],
    *,
    prepare: dict[tuple[str, str], Prepare] | None = None,
    shrink: bool = True,
) -> list[dict]:
    """The units the runner executes for ``snippets``: ``{"where", "filename", "line", "code"}`` dicts.

    Each snippet gives its setup (if any), then itself (placeholders replaced, budgets shrunk, ``line`` kept so
    that tracebacks name Markdown lines), then its check (if any).

    Raises:
        ValueError: a replacement whose placeholder is not in its block, or that changes the number of lines.

    Examples:
        >>> s = Snippet(Path("x.md"), 3, "T", "for i in range(10):\\n    pass\\n")
        >>> [(b["where"], b["line"], b["code"]) for b in prepared_blocks([s])]
        [('x.md:3 (T)', 3, 'for i in range(2):\\n    pass\\n')]
    """
    prepare = PREPARE if prepare is None else prepare
    blocks = []
    for snippet in snippets:
        entry = prepare.get((snippet.path.name, snippet.heading))
        code = snippet.code
        if entry is not None and entry.setup:
            blocks.append({"where": f"setup of {snippet.where}", "filename": f"<setup of {snippet.where}>",
                           "line": 0, "code": entry.setup})  # fmt: skip
        for old, new in (entry.replace if entry is not None else {}).items():
            if old not in code or new.count("\n") != old.count("\n"):
                raise ValueError(f"{snippet.where}: cannot replace {old!r} by {new!r} (absent, or adds lines)")
            code = code.replace(old, new)
        if shrink:
            code = shrink_budgets(code)
        blocks.append({"where": snippet.where, "filename": str(snippet.path.resolve()), "line": snippet.line,
                       "code": code})  # fmt: skip
        if entry is not None and entry.check:
            blocks.append({"where": f"check of {snippet.where}", "filename": f"<check of {snippet.where}>",
                           "line": 0, "code": entry.check})  # fmt: skip
    return blocks


# Runs in the subprocess: one torch thread, then every block in one namespace, each compiled with its Markdown
# file name and padded to its line so that tracebacks show the Markdown's own lines.
_DRIVER = r"""
import json, sys, time
try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    pass
namespace = {"__name__": "__snippet__"}
for block in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"=== {block['where']}", flush=True)
    start = time.perf_counter()
    exec(compile("\n" * block["line"] + block["code"], block["filename"], "exec"), namespace)
    print(f"=== ok in {time.perf_counter() - start:.1f} s: {block['where']}", flush=True)
"""


def run_markdown_file(
    path: str | os.PathLike,
    *,
    cwd: str | os.PathLike | None = None,
    timeout: float = 600.0,
    include_slow: bool = False,
    prepare: dict[tuple[str, str], Prepare] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, list[Snippet]]:
    """Run the ```python blocks of one Markdown file, in order, in one fresh Python subprocess.

    Blocks marked ``skip`` never run, blocks marked ``slow`` only with ``include_slow``. The subprocess gets
    ``OMP_NUM_THREADS=1`` (and ``torch.set_num_threads(1)``), ``HF_HUB_OFFLINE=1`` and ``MPLBACKEND=Agg``, on top
    of ``env`` (default: this process's environment), and runs in ``cwd`` (default: a new temporary folder), where
    the blocks' relative output paths land.

    Returns:
        ``(completed_process, snippets_run)``; the process's ``stdout`` holds ``=== <where>`` / ``=== ok ...``
        lines around each block and its output, ``stderr`` the traceback of a failure.

    Raises:
        subprocess.TimeoutExpired: the blocks ran past ``timeout`` seconds.
        ValueError: an entry of ``prepare`` for this file matches none of its blocks.

    Examples:
        >>> import tempfile
        >>> md = Path(tempfile.mkdtemp()) / "x.md"
        >>> _ = md.write_text("# T\\n```python\\nx = sum(range(1000))  # shrunk to range(2)\\n```\\n"
        ...                   "```python\\nprint(x)\\n```\\n")
        >>> result, ran = run_markdown_file(md, prepare={})
        >>> result.returncode, result.stdout.splitlines()[-2], len(ran)
        (0, '1', 2)
    """
    path = Path(path)
    prepare = PREPARE if prepare is None else prepare
    snippets = extract_python_blocks(path)
    known = {(s.path.name, s.heading) for s in snippets}
    stale = [key for key in prepare if key[0] == path.name and key not in known]
    if stale:
        raise ValueError(f"{path}: PREPARE entries match no ```python block: {stale}")
    runnable = [s for s in snippets if s.marker is None or (s.marker == "slow" and include_slow)]
    child_env = dict(os.environ if env is None else env)
    child_env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory(prefix="snippets_") as scratch:
        blocks_file = Path(scratch) / "blocks.json"
        blocks_file.write_text(json.dumps(prepared_blocks(runnable, prepare=prepare)), encoding="utf-8")
        workdir = Path(cwd) if cwd is not None else Path(scratch) / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", _DRIVER, str(blocks_file)],
            cwd=workdir,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return result, runnable


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run (or ``--list``) the blocks of the given Markdown files; exit status 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--runslow", action="store_true", help="also run blocks marked slow")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per Markdown file")
    parser.add_argument("--list", action="store_true", help="list the blocks, run nothing")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        snippets = extract_python_blocks(path)
        if args.list:
            for s in snippets:
                print(f"{s.where}: {s.marker or 'run'}{f' ({s.reason})' if s.reason else ''}")
            continue
        if not snippets:
            continue
        try:
            result, ran = run_markdown_file(path, timeout=args.timeout, include_slow=args.runslow)
        except subprocess.TimeoutExpired:
            print(f"FAIL {path}: timed out after {args.timeout:.0f} s")
            failed += 1
            continue
        status = "ok" if result.returncode == 0 else "FAIL"
        print(f"{status} {path}: {len(ran)} of {len(snippets)} blocks run")
        if result.returncode != 0:
            failed += 1
            print(result.stdout[-3000:], result.stderr[-6000:], sep="\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
