"""Early, named errors for what a DTQL loss is given: networks built for other sizes, and malformed batches.

:class:`~torchrl_dtql.DTQLLoss` calls :func:`check_network_sizes` when it is built and :func:`check_batch` (through
its public ``check_inputs``) before it reads a batch; the fused updater checks each batch the same way.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn

from torchrl_dtql.modules.critics import CriticMLP

__all__ = ["action_dim_of", "check_batch", "check_network_sizes"]


def action_dim_of(module: nn.Module) -> int | None:
    """The action size a policy module's spec declares (``None`` when it has no spec).

    Examples:
        >>> from torchrl_dtql import make_dtql_modules
        >>> action_dim_of(make_dtql_modules(3, 2, hidden_dim=8)["actor_network"])
        2
    """
    spec = getattr(module, "spec", None)
    if spec is None:
        return None
    try:
        leaf = spec["action"] if "action" in spec.keys() else next(iter(spec.values(True, True)))
    except (AttributeError, KeyError, StopIteration):
        leaf = spec
    return int(leaf.shape[-1]) if len(leaf.shape) else None


def check_network_sizes(
    actor_network: nn.Module, diffusion_network: nn.Module, qvalue_network: nn.Module | list[nn.Module]
) -> None:
    """Refuses an actor, diffusion model and Q networks built for different observation or action sizes.

    Examples:
        >>> from torchrl_dtql import make_dtql_modules
        >>> small, large = make_dtql_modules(3, 2, hidden_dim=8), make_dtql_modules(3, 4, hidden_dim=8)
        >>> check_network_sizes(small["actor_network"], large["diffusion_network"], small["qvalue_network"])
        Traceback (most recent call last):
        ...
        ValueError: Action sizes disagree: the actor's spec has 2 dims, the diffusion network's has 4. Build both from the same action spec (make_dtql_modules does).
    """
    actor_dim = action_dim_of(actor_network)
    diffusion_dim = action_dim_of(diffusion_network)
    if actor_dim is not None and diffusion_dim is not None and actor_dim != diffusion_dim:
        raise ValueError(
            f"Action sizes disagree: the actor's spec has {actor_dim} dims, the diffusion network's has "
            f"{diffusion_dim}. Build both from the same action spec (make_dtql_modules does)."
        )
    denoiser = getattr(diffusion_network.module, "denoiser", None)
    q_nets = qvalue_network if isinstance(qvalue_network, (list, tuple)) else [qvalue_network]
    obs_dim = getattr(denoiser, "observation_dim", None)
    for q in q_nets:
        inner = getattr(q, "module", None)
        if isinstance(inner, CriticMLP) and actor_dim is not None and obs_dim is not None:
            in_features = inner.net[0].in_features
            if in_features != obs_dim + actor_dim:
                raise ValueError(
                    f"The Q network takes {in_features} input features but observation ({obs_dim}) + action "
                    f"({actor_dim}) = {obs_dim + actor_dim}: the critic and the actor were built for different "
                    "observation or action sizes."
                )


def check_batch(
    tensordict: TensorDictBase,
    keys: list[NestedKey],
    *,
    action_key: NestedKey,
    action_dim: int | None,
    reward_key: NestedKey,
    check_finite: bool,
) -> None:
    """Fails early, naming the key, on missing entries, wrong action or reward shapes, or non-finite values.

    Args:
        tensordict: the batch.
        keys: the entries to check.

    Keyword Args:
        action_key, action_dim: the action entry and the size the networks were built for (``None``: unchecked).
        reward_key: the reward entry, which must be ``[*batch, 1]``.
        check_finite: also refuse NaN/inf (a device-to-host sync per tensor).

    Examples:
        >>> from tensordict import TensorDict
        >>> batch = TensorDict(action=torch.zeros(4, 3), batch_size=[4])
        >>> check_batch(batch, ["action"], action_key="action", action_dim=2, reward_key=("next", "reward"),
        ...             check_finite=False)
        Traceback (most recent call last):
        ...
        ValueError: DTQLLoss: the batch's 'action' has 3 dims (shape (4, 3)) but the networks were built for 2-dim actions.
    """
    present = None
    for key in keys:
        value = tensordict.get(key, None)
        if value is None:
            present = present or sorted(str(k) for k in tensordict.keys(True, True))
            raise KeyError(
                f"DTQLLoss: the batch has no entry {key!r}. Present keys: {present}. Rename your data or point "
                f"the loss at your keys with loss.set_keys(...)."
            )
        if value.shape[: tensordict.ndim] != tensordict.batch_size:
            raise ValueError(
                f"DTQLLoss: entry {key!r} has shape {tuple(value.shape)}, which does not start with the batch "
                f"size {tuple(tensordict.batch_size)}."
            )
        if check_finite and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = (~finite).reshape(value.shape[0], -1).any(-1).nonzero()
                raise ValueError(
                    f"DTQLLoss: entry {key!r} holds {int((~finite).sum())} non-finite values (NaN/inf); the first "
                    f"is in sample {int(bad[0])}. Clean the dataset (e.g. drop_nonfinite=True when loading)."
                )
    if action_key in keys and action_dim is not None:
        action = tensordict.get(action_key)
        if action.shape[-1] != action_dim:
            raise ValueError(
                f"DTQLLoss: the batch's {action_key!r} has {action.shape[-1]} dims (shape {tuple(action.shape)}) "
                f"but the networks were built for {action_dim}-dim actions."
            )
    if reward_key in keys:
        reward = tensordict.get(reward_key)
        if reward.shape != (*tensordict.batch_size, 1):
            raise ValueError(
                f"DTQLLoss: {reward_key!r} must have shape {(*tensordict.batch_size, 1)} (a trailing singleton "
                f"dim), got {tuple(reward.shape)}."
            )
