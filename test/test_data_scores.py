"""Normalized scores: the D4RL table, Minari metadata, dataset infos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _data_common import write_minari
from torchrl_dtql.data import get_normalized_score, load_offline_dataset, reference_scores

pytestmark = pytest.mark.filterwarnings("error")


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("hopper-medium-v2", 3234.3, 100.0),
        ("hopper-medium-replay-v2", -20.272305, 0.0),
        ("halfcheetah-medium-v2", 4922.0, 100 * (4922.0 + 280.178953) / (12135.0 + 280.178953)),
        ("walker2d-medium-expert-v2", 1.629008 + (4592.3 - 1.629008) / 2, 50.0),
        ("Hopper-v5", 1607.0138475, 50.0),
        ("HalfCheetah-v5", 12135.0, 100.0),
        ("mujoco/walker2d/expert-v0", 4592.3, 100.0),  # not local: the D4RL table
        ("antmaze-umaze-v0", 1.0, 100.0),
        ("antmaze-large-diverse-v2", 0.5, 50.0),
        ("D4RL/antmaze/medium-play-v1", 0.0, 0.0),
        ("AntMaze_UMaze-v4", 1.0, 100.0),
        ("pen-human-v1", 3076.8331017826877, 100.0),
        ("pen-cloned-v1", 96.262799, 0.0),
        ("AdroitHandPen-v1", 1586.5479503913438, 50.0),
        ("kitchen-partial-v0", 3.0, 75.0),
        ("D4RL/kitchen/mixed-v2", 2.0, 50.0),
        ("FrankaKitchen-v1", 4.0, 100.0),
    ],
)
def test_d4rl_table(name, raw, expected):
    assert get_normalized_score(name, raw) == pytest.approx(expected, abs=1e-6)


def test_array_and_tensor_inputs():
    out = get_normalized_score("hopper-medium-v2", np.array([-20.272305, 3234.3]))
    np.testing.assert_allclose(out, [0.0, 100.0], atol=1e-9)
    out = get_normalized_score("hopper-medium-v2", torch.tensor([3234.3], dtype=torch.float64))
    np.testing.assert_allclose(out, [100.0], atol=1e-9)


def test_family_matching_is_not_fooled():
    assert reference_scores("Ant-v5") == (-325.6, 3879.7)
    assert reference_scores("antmaze-medium-diverse-v2") == (0.0, 1.0)
    with pytest.raises(KeyError, match="No reference scores"):
        get_normalized_score("CartPole-v1", 10.0)
    with pytest.raises(KeyError):
        get_normalized_score("openpendulum-v0", 10.0)  # "pen" only as a whole word


def test_minari_metadata_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    write_minari("test/hopper/refs-v0", ref_min_score=0.0, ref_max_score=200.0)
    assert get_normalized_score("test/hopper/refs-v0", 50.0) == pytest.approx(25.0)
    _, info = load_offline_dataset("test/hopper/refs-v0")
    assert get_normalized_score(info, 100.0) == pytest.approx(50.0)
    assert info.normalized_score(200.0) == pytest.approx(100.0)
    # An info without references falls back to its dataset id, then its env id.
    bare = info.replace(ref_min_score=None, ref_max_score=None, dataset_id="x/y/unknown-v0")
    assert get_normalized_score(bare, 3234.3) == pytest.approx(100.0)
