"""The shipped ``d4rl-like/...`` recipes: they load, regenerate (segment by segment) and name what is not shipped."""
from __future__ import annotations

import json

import pytest

from torchrl_dtql.data import load_offline_dataset
from torchrl_dtql.data.embedded import embedded_recipe, is_embedded_id, regenerate_embedded
from torchrl_dtql.data.scores import D4RL_DATASET_SCORES, get_normalized_score


@pytest.mark.parametrize("family, env_id", [("halfcheetah", "HalfCheetah-v5"), ("hopper", "Hopper-v5")])
def test_each_shipped_medium_recipe_records_what_matched_d4rl(family, env_id):
    recipe = embedded_recipe(f"d4rl-like/{family}/medium-v0")
    assert recipe.env_id == env_id and recipe.num_steps == 1_000_000 and recipe.actor_path.is_file()
    expected = recipe.info["expected_on_regeneration"]
    # the bar: the behaviour score within 5 points of D4RL's v2 medium set
    assert abs(expected["normalized_score"] - D4RL_DATASET_SCORES[(family, "medium")]) <= 5.0
    # the recorded score is the recorded return on D4RL's scale (0.05: the score is stored rounded to 0.1)
    assert get_normalized_score(family, expected["return_mean"]) == pytest.approx(expected["normalized_score"],
                                                                                   abs=0.05)


def test_a_medium_replay_recipe_regenerates_its_segments_in_order(tmp_path):
    recipe = embedded_recipe("d4rl-like/halfcheetah/medium-replay-v0")
    segments = recipe.recording()
    assert segments[0].actor_path is None  # the SAC warm-up: uniform random actions
    assert all(s.actor_path.is_file() for s in segments[1:]) and recipe.num_steps == sum(s.num_steps for s in segments)
    folder = regenerate_embedded(recipe, tmp_path, num_steps=2 * len(segments) * 17, progress=False)
    meta = json.loads((folder / "torchrl_dtql.json").read_text())
    assert [name for name, _ in meta["segments"]] == [None] + [s.actor_path.name for s in segments[1:]]
    assert meta["num_transitions"] == sum(n for _, n in meta["segments"])


def test_ids_that_are_not_shipped_say_which_are():
    assert is_embedded_id("d4rl-like/walker2d/medium-v0")
    with pytest.raises(KeyError, match="d4rl-like/halfcheetah/medium-v0"):
        embedded_recipe("d4rl-like/walker2d/medium-v0")
    with pytest.raises(KeyError, match="available"):
        load_offline_dataset("d4rl-like/nothing/medium-v0")
