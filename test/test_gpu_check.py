"""benchmarks/gpu_check.sh --smoke, as CI runs it (on this CPU): it finishes within its time limit and writes the
JSON that docs/benchmarks.md ("GPU check") describes, with the CUDA-only variants skipped and their reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_on_cpu_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--device", "cpu",
                             "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1]) == report  # printed too
    assert report["format"] == "torchrl_dtql.gpu_check/1" and report["smoke"] is True and report["device"] == "cpu"
    # the Python side keeps to its budget (40 s, with a little slack for the final evaluation on a busy machine)
    assert report["total_seconds"] < report["budget_s"] + 15
    assert set(report["phase_seconds"]) == {"dataset", "update", "acting", "training"}

    dataset = report["dataset"]
    assert dataset["id"] == "embedded/hopper/medium-v0" and dataset["num_transitions"] == 2000
    assert dataset["seconds"] > 0 and dataset["behaviour_normalized_score"] is not None

    measured = {(row["variant"], row["batch_size"]) for row in report["update"]}
    assert measured == {("eager", 256), ("eager", 2048)}
    assert all(row["steps_per_s"] > 0 and row["ms_per_step"] > 0 for row in report["update"])
    skipped = {entry["what"]: entry["reason"] for entry in report["skipped"]}
    assert "CUDA" in skipped["update cudagraphs batch 256"] and "CUDA" in skipped["update cudagraphs batch 2048"]
    assert "--smoke" in skipped["update compiled batch 256"]

    assert {(row["mode"], row["batch_size"]) for row in report["acting"]} == {
        (mode, batch) for mode in ("mean", "reranked", "diffusion_bc") for batch in (1, 2)}
    assert all(row["ms"] > 0 for row in report["acting"])

    training = report["training"]
    assert training["variant"] == "eager" and training["steps_done"] >= 100 and training["steps_per_s"] > 0
    assert training["pretrain_steps"] + training["main_steps"] == training["steps_done"]
    for mode in ("reranked", "mean"):
        assert isinstance(training["scores"][mode]["normalized_score"]["mean"], float)
