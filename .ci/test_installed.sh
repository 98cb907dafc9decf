#!/usr/bin/env bash
# Tests torchrl-dtql as a user gets it from `pip install torchrl-dtql`: the built wheel, installed with NO extras
# into a fresh venv outside the source tree, run from a working directory outside the repository.
#
#   .ci/test_installed.sh            # called by .ci/run after the unit tests; ~2-3 min on 2 CPU cores
#
# Steps: build the sdist and, from it, the wheel; check the package data is inside both; install torch==2.13.0
# then the wheel into a fresh venv; check it is the installed copy that is imported (not the source tree); run
# (a) the README's "DTQL in a TorchRL pipeline" snippet, extracted from README.md now, on a few steps;
# (b) the main job examples/dtql_offline.py (a copy of examples/ next to the venv) on a tiny budget;
# (c) python -m torchrl_dtql.trainers on a tiny budget; (d) dtql-make-dataset --help.
#
# Environment: PYTHON (interpreter for the venvs, default python3), KEEP_WORK=1 (keep the temp folder, ~1.3 GB),
# TORCH_SPEC (default torch==2.13.0: pinned so that pip never resolves an unpinned torch).
# Everything the run writes (embedded-dataset cache, Minari root, outputs) stays in the temp folder; the embedded
# default dataset is therefore regenerated from its shipped asset (no network), which takes ~1-2 minutes.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/torchrl-dtql-installed.XXXXXX")"
START=$SECONDS

cleanup() {
    local rc=$?
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then
        echo "[test_installed] work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "[test_installed] FAILED (exit $rc) at step \"$CURRENT\", after $((SECONDS - START)) s" >&2
        [[ "${KEEP_WORK:-0}" == 1 ]] || echo "[test_installed] rerun with KEEP_WORK=1 to keep the venv and logs" >&2
    fi
}
trap cleanup EXIT

CURRENT="setup"
step() { CURRENT="$*"; echo; echo "=== [test_installed] $* ($((SECONDS - START)) s)"; }
fail() { echo "[test_installed] FAILED: $*" >&2; exit 1; }
# pip, quietly: its output goes to a log, shown only when it fails (this machine's pip config adds many warnings).
pip_quiet() {
    python -m pip "$@" > "$WORK/pip.log" 2>&1 || { tail -n 40 "$WORK/pip.log" >&2; fail "pip $*"; }
}

# Nothing from the source tree or the caller's venv may leak into the fresh one.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV || true
export HF_HUB_OFFLINE=1                         # never download: the default paths need no network
export TORCHRL_DTQL_CACHE="$WORK/cache"         # a fresh embedded-dataset cache: regenerated on first use
export MINARI_DATASETS_PATH="$WORK/minari"      # a fresh Minari root
export MPLBACKEND=Agg
export TQDM_MININTERVAL=30                      # progress bars: a line every 30 s in the log, not every 0.1 s
RUN="$WORK/cwd"                                 # the working directory of every check: outside the repository
mkdir -p "$RUN" "$WORK/dist"

step "1/8 build the sdist, then the wheel from it (python -m build, in a builder venv)"
"$PYTHON" -m venv "$WORK/builder"
"$WORK/builder/bin/python" -m pip install -q build > "$WORK/pip.log" 2>&1 \
    || { tail -n 40 "$WORK/pip.log" >&2; fail "pip install build"; }
"$WORK/builder/bin/python" -m build --outdir "$WORK/dist" "$REPO" > "$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "the build failed (log above)"; }
SDIST="$(ls "$WORK"/dist/torchrl_dtql-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/torchrl_dtql-*.whl)"
ls -l "$WORK/dist"

step "2/8 the package data and every module are inside the wheel and the sdist"
"$WORK/builder/bin/python" - "$REPO" "$WHEEL" "$SDIST" <<'EOF'
"""Every file of the source package (modules and data read at run time) must be in the wheel and the sdist."""
from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

repo, wheel, sdist = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
package = repo / "torchrl_dtql"
wanted = sorted(
    p.relative_to(repo).as_posix()
    for p in package.rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
)
# What the package opens from its own folder (importlib.resources / __file__), named so that a rename fails here.
must = ["torchrl_dtql/data/assets/embedded.json", "torchrl_dtql/data/assets/hopper_medium_actor.pt",
        "torchrl_dtql/trainers/recipes/dtql_offline.yaml"]
in_wheel = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
problems = [f"{f}: missing from the source tree" for f in must if f not in wanted]
problems += [f"{f}: not in the wheel" for f in wanted if f not in in_wheel]
problems += [f"{f}: not in the sdist" for f in wanted + ["README.md", "LICENSE", "setup.py"] if f not in in_sdist]
data = [f for f in wanted if not f.endswith(".py")]
print(f"wheel: {Path(wheel).name}, {Path(wheel).stat().st_size / 1024:.0f} KB, {len(in_wheel)} files; "
      f"{len(wanted)} package files checked, data: {', '.join(data)}")
if problems:
    sys.exit("package contents:\n  " + "\n  ".join(problems))
EOF

step "3/8 a fresh venv outside the source tree: $TORCH_SPEC, then the wheel with no extras"
"$PYTHON" -m venv "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
[[ "$(command -v python)" == "$WORK/venv/bin/python" ]] || fail "the fresh venv's python is not first on PATH"
cd "$RUN"
pip_quiet install "$TORCH_SPEC"
pip_quiet install "$WHEEL"
python -m pip check
# What the extras add must be absent: the checks below run on the bare install.
OPTIONAL='^(pytest|huggingface[-_]hub|gymnasium[-_]robotics|wandb|tensorboard|hydra[-_](joblib|submitit)[-_]launcher)=='
if python -m pip list --format=freeze 2>/dev/null | grep -qiE "$OPTIONAL"; then
    fail "an optional package is installed: $(python -m pip list --format=freeze 2>/dev/null | grep -iE "$OPTIONAL")"
fi
python -m pip show torchrl-dtql | sed -n '1,12p'

step "4/8 the imported package is the installed copy, not the source tree"
python - "$REPO" <<'EOF'
"""torchrl_dtql must come from the venv's site-packages, with its metadata's version."""
from __future__ import annotations

import sys
import sysconfig
from importlib import metadata, resources
from pathlib import Path

import torchrl_dtql

repo = Path(sys.argv[1]).resolve()
where = Path(torchrl_dtql.__file__).resolve()
site = Path(sysconfig.get_paths()["purelib"]).resolve()
print(f"torchrl_dtql {torchrl_dtql.__version__} imported from {where}")
assert site in where.parents, f"torchrl_dtql was imported from {where}, not from the venv's {site}"
assert repo not in where.parents, f"torchrl_dtql was imported from the source tree {repo}"
assert metadata.version("torchrl-dtql") == torchrl_dtql.__version__, "the wheel's version is not __version__"
assets = resources.files("torchrl_dtql.data") / "assets"
assert (assets / "embedded.json").is_file() and (assets / "hopper_medium_actor.pt").is_file(), "assets missing"
assert (resources.files("torchrl_dtql.trainers.recipes") / "dtql_offline.yaml").is_file(), "trainer YAML missing"
EOF

step "5/8 (a) the README pipeline snippet, on a few steps (first use regenerates the embedded dataset, ~1-2 min)"
"$PYTHON" "$REPO/.ci/readme_snippet.py" "$REPO/README.md" "$WORK/readme_snippet.py" --steps 3
python "$WORK/readme_snippet.py"

step "6/8 (b) the main job, examples/dtql_offline.py, on a tiny budget (examples/ copied next to the venv)"
cp -r "$REPO/examples" "$WORK/examples"
find "$WORK/examples" -name __pycache__ -prune -exec rm -rf {} +
python "$WORK/examples/dtql_offline.py" \
    optim.pretrain_steps=5 optim.gradient_steps=10 optim.batch_size=64 \
    logger.log_iter=5 logger.eval_iter=10 logger.eval_episodes=1 logger.eval_max_steps=20 \
    env.eval_envs=1 policy.num_candidates=8 checkpoint.interval=0 \
    output_dir="$WORK/main_job" hydra.run.dir="$WORK/main_job/hydra" 2>&1 | tee "$WORK/main_job.log"
for f in summary.json learning_curve.png policy.pt2; do
    [[ -s "$WORK/main_job/$f" ]] || fail "the main job wrote no $f in $WORK/main_job"
done
python -c "import json, sys; s = json.load(open(sys.argv[1])); print('summary.json keys:', ', '.join(sorted(s)))" \
    "$WORK/main_job/summary.json"

step "7/8 (c) python -m torchrl_dtql.trainers, on a tiny budget"
python -m torchrl_dtql.trainers \
    optim.pretrain_steps=2 optim.gradient_steps=4 optim.batch_size=32 trainer.optim_steps_per_batch=2 \
    trainer.progress_bar=false evaluation.eval_iter=4 evaluation.eval_episodes=1 evaluation.eval_envs=1 \
    evaluation.eval_max_steps=20 evaluation.num_candidates=8 \
    logger.log_dir="$WORK/trainer/logs" hydra.run.dir="$WORK/trainer/hydra" 2>&1 | tee "$WORK/trainer.log"
grep -q "^reranked: final normalized score" "$WORK/trainer.log" || fail "python -m torchrl_dtql.trainers printed no scores"
SCALARS="$WORK/trainer/logs/dtql_hopper_medium/scalars"
[[ -s "$SCALARS/optim_steps.csv" ]] || fail "python -m torchrl_dtql.trainers logged nothing under $SCALARS"
echo "trainer logged: $(ls "$SCALARS" | tr '\n' ' ')"

step "8/8 (d) dtql-make-dataset --help"
dtql-make-dataset --help > "$WORK/make_dataset_help.txt"
grep -q -- "--env" "$WORK/make_dataset_help.txt" || fail "dtql-make-dataset --help does not describe --env"
head -n 3 "$WORK/make_dataset_help.txt"

echo
echo "=== [test_installed] PASSED in $((SECONDS - START)) s: $(basename "$WHEEL"), $(($(stat -c %s "$WHEEL") / 1024)) KB"
