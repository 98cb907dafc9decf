"""The behaviour policy of the dataset maker: a TorchRL tanh-Gaussian actor, saved and loaded as a small file.

The SAC agent (:mod:`torchrl_dtql.data.maker.sac`) trains it; the recording (:mod:`~torchrl_dtql.data.maker.recording`)
rolls it out; the embedded default dataset ships one such file and regenerates its data from it. Keeping it apart from
the SAC trainer lets the data loaders load an actor without importing the training (and evaluation) machinery.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn

from torchrl_dtql.io import atomic_torch_save

__all__ = ["ACTOR_FORMAT", "load_behaviour_actor", "make_behaviour_actor", "save_behaviour_actor"]

ACTOR_FORMAT = "torchrl_dtql.behaviour_actor/1"


def make_behaviour_actor(
    observation_size: int,
    action_low: torch.Tensor | Sequence[float],
    action_high: torch.Tensor | Sequence[float],
    hidden_sizes: Sequence[int] = (256, 256),
):
    """Build the SAC actor: an MLP giving ``loc``/``scale`` and a TanhNormal over the action box.

    Args:
        observation_size: size of the flat float observation.
        action_low: lower action bounds (one value per action dimension).
        action_high: upper action bounds.
        hidden_sizes: widths of the ReLU hidden layers.

    Returns:
        A :class:`~torchrl.modules.ProbabilisticActor` reading ``"observation"`` and writing
        ``"action"``; random under ``ExplorationType.RANDOM``, ``tanh(loc)`` under
        ``DETERMINISTIC``.

    Examples:
        >>> actor = make_behaviour_actor(11, [-1.0] * 3, [1.0] * 3, hidden_sizes=(8,))
        >>> td = actor(TensorDict({"observation": torch.zeros(11)}))
        >>> td["action"].shape
        torch.Size([3])
    """
    from torchrl.data import Bounded
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal

    low = torch.as_tensor(action_low, dtype=torch.float32)
    high = torch.as_tensor(action_high, dtype=torch.float32)
    action_size = int(low.numel())
    spec = Bounded(low=low, high=high, shape=(action_size,), dtype=torch.float32)
    net = nn.Sequential(
        MLP(
            in_features=observation_size,
            out_features=2 * action_size,
            num_cells=list(hidden_sizes),
            activation_class=nn.ReLU,
        ),
        NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=1e-4),
    )
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": False},
        return_log_prob=False,
    )


def save_behaviour_actor(actor: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Save an actor made by :func:`make_behaviour_actor` with what is needed to rebuild it.

    Args:
        actor: the actor.
        path: destination file (written atomically).
        **meta: JSON-able metadata. ``observation_size``, ``action_low``, ``action_high`` and
            ``hidden_sizes`` are required to rebuild; ``env_id``, ``train_step`` and
            ``eval_return`` are customary.

    Returns:
        The path written.

    Examples:
        >>> import tempfile
        >>> a = make_behaviour_actor(4, [-1.0], [1.0], hidden_sizes=(8,))
        >>> p = save_behaviour_actor(a, Path(tempfile.mkdtemp()) / "a.pt", observation_size=4,
        ...     action_low=[-1.0], action_high=[1.0], hidden_sizes=[8])
        >>> load_behaviour_actor(p)[1]["observation_size"]
        4
    """
    for key in ("observation_size", "action_low", "action_high", "hidden_sizes"):
        if key not in meta:
            raise ValueError(f"save_behaviour_actor needs the metadata field {key!r}.")
    state = {k: v.detach().clone().float() for k, v in actor.state_dict().items()}
    return atomic_torch_save({"format": ACTOR_FORMAT, "meta": meta, "state_dict": state}, path)


def load_behaviour_actor(path: str | Path):
    """Rebuild an actor saved by :func:`save_behaviour_actor`.

    Args:
        path: the checkpoint file.

    Returns:
        ``(actor, meta)``.

    Loading draws no random number from the caller's torch generator (the network's initial weights, drawn from a
    forked generator, are overwritten), so regenerating the embedded dataset on first use leaves a seeded run's random
    stream exactly as it is when the dataset is already cached.

    Raises:
        ValueError: the file is not a behaviour-actor checkpoint.

    Examples:
        >>> # see save_behaviour_actor
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != ACTOR_FORMAT:
        raise ValueError(f"{path} is not a behaviour-actor checkpoint ({ACTOR_FORMAT}).")
    meta = blob["meta"]
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        actor = make_behaviour_actor(
            int(meta["observation_size"]),
            meta["action_low"],
            meta["action_high"],
            hidden_sizes=tuple(meta["hidden_sizes"]),
        )
    actor.load_state_dict(blob["state_dict"])
    actor.eval()
    return actor, meta
