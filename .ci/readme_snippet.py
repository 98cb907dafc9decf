"""Extract the README's "DTQL in a TorchRL pipeline" snippet as a short script (used by ``.ci/test_installed.sh``).

Usage::

    python .ci/readme_snippet.py README.md OUT.py [--steps N]

The snippet is the ```` ```python ```` block under the heading ``## DTQL in a TorchRL pipeline``. Its loop counts
(``range(50_000)``, ``range(1_000_000)``, any ``range(<literal>)``) are cut to a few steps so that the script runs
in seconds, and checks are appended (the loops ran, the last metrics are finite, the policy acts on a batch).
Nothing else is changed: the script is what a user copies from the README, on a small budget.

When the repository's shared helper ``test/_snippets.py`` is there, its extraction, budget shrinking and checks
for this block are used (one definition of "the README snippet works" for the unit tests and CI); otherwise a
small extraction of its own. Only the standard library is used, so any interpreter can run this.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

HEADING = "DTQL in a TorchRL pipeline"
#: ``range(50_000)``, ``range(1000)``: a literal loop count.
RANGE_LITERAL = re.compile(r"\brange\(\s*(\d[\d_]*)\s*\)")
#: Dataset ids that exist only where someone made them first (with the dataset maker), never in a fresh install.
LOCAL_DATASET = re.compile(r"""(?<=make_offline_replay_buffer\()(["'])local/\w[\w./-]*\1""")

CHECKS = '''

# --- appended by .ci/readme_snippet.py: the snippet above must have produced a working pipeline ---------------
import math as _math

import torchrl_dtql as _dtql

print(f"README snippet ran with torchrl_dtql {_dtql.__version__} from {_dtql.__file__}")
_items = metrics.items(True, True) if hasattr(metrics, "batch_size") else metrics.items()  # TensorDict or dict
_last = {str(k): float(v.float().mean()) for k, v in _items}  # the last main-phase step's detached losses
assert _last, "dtql_update_step returned no metrics"
assert all(_math.isfinite(v) for v in _last.values()), f"non-finite metrics: {_last}"
print("last metrics:", ", ".join(f"{k}={v:.4g}" for k, v in sorted(_last.items())))
_batch = rb.sample()[:4]
_out = policy(_batch.exclude("action"))
assert _out["action"].shape == _batch["action"].shape, (_out["action"].shape, _batch["action"].shape)
print("policy acts: action", tuple(_out["action"].shape))
'''


class SnippetError(RuntimeError):
    """The README no longer has the snippet where this script looks for it."""


def load_shared_helper(readme: Path) -> ModuleType | None:
    """``test/_snippets.py`` next to the README, if it is there and has the functions used here."""
    path = readme.resolve().parent / "test" / "_snippets.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_snippets", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_snippets"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    if not all(hasattr(module, name) for name in ("extract_python_blocks", "prepared_blocks")):
        return None
    return module


def snippet_with_shared_helper(helper: ModuleType, readme: Path) -> tuple[str, list[str]]:
    """The block (budgets shrunk) and its setup/checks, as test/_snippets.py prepares them for the unit tests."""
    blocks = [s for s in helper.extract_python_blocks(readme) if s.heading.strip() == HEADING]
    if not blocks:
        raise SnippetError(f"test/_snippets.py finds no ```python block under '## {HEADING}'.")
    parts = [f"# --- {b['where']}\n{b['code']}" for b in helper.prepared_blocks(blocks[:1])]
    return "\n".join(parts), ["extracted and shrunk with test/_snippets.py"]


def snippet_on_its_own(readme: Path, steps: int) -> tuple[str, list[str]]:
    """The first ```python block after the heading and before the next ``## `` one, loops cut to ``steps``."""
    text = readme.read_text(encoding="utf-8")
    heading = re.search(rf"^##\s+{re.escape(HEADING)}\s*$", text, flags=re.MULTILINE)
    if heading is None:
        raise SnippetError(f"README has no heading '## {HEADING}'.")
    section = text[heading.end():]
    next_heading = re.search(r"^## ", section, flags=re.MULTILINE)
    section = section[: next_heading.start()] if next_heading else section
    block = re.search(r"^```python[^\n]*\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise SnippetError(f"no ```python block under '## {HEADING}'.")
    notes: list[str] = []

    def cut(match: re.Match[str]) -> str:
        notes.append(f"range({match.group(1)}) -> range({steps})")
        return f"range({min(steps, int(match.group(1)))})"

    return RANGE_LITERAL.sub(cut, block.group(1)), notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=3, help="loop count of every range(<literal>) (default 3)")
    parser.add_argument("--no-shared-helper", action="store_true", help="do not use test/_snippets.py")
    args = parser.parse_args(argv)
    helper = None if args.no_shared_helper else load_shared_helper(args.readme)
    try:
        if helper is not None:
            code, notes = snippet_with_shared_helper(helper, args.readme)
        else:
            code, notes = snippet_on_its_own(args.readme, args.steps)
    except SnippetError as err:
        print(f"readme_snippet: {err}", file=sys.stderr)
        return 1
    if RANGE_LITERAL.search(code) and any(int(m.group(1)) > 100 for m in RANGE_LITERAL.finditer(code)):
        print("readme_snippet: a loop of more than 100 steps is left in the snippet", file=sys.stderr)
        return 1
    # A locally made dataset cannot exist in a fresh install: the embedded one, regenerated on first use, can.
    for match in LOCAL_DATASET.finditer(code):
        notes.append(f"NOTE: the snippet loads {match.group(0)}, which a fresh install cannot have; using "
                     "the embedded default dataset instead")
    code = LOCAL_DATASET.sub('"embedded/hopper/medium-v0"', code)
    for name in ("rb", "metrics", "policy"):  # what the appended checks read
        if not re.search(rf"^\s*{name}\s*=", code, flags=re.MULTILINE):
            print(f"readme_snippet: the snippet no longer defines {name!r}; update .ci/readme_snippet.py",
                  file=sys.stderr)
            return 1
    args.out.write_text(code + CHECKS, encoding="utf-8")
    for note in notes:
        print(f"readme_snippet: {note}")
    print(f"readme_snippet: wrote {args.out} ({len(code.splitlines())} lines from {args.readme.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
