"""Networks called on plain tensors with given parameters: the fast paths' way to run a loss's networks.

* :func:`bind_parameters`: a private copy of a network that holds given parameter tensors (shared, not copied);
* :func:`ensemble_values`: a stacked ensemble (the twin Q) called on plain tensors, vmapped or looped.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from torch import nn, Tensor

__all__ = ["bind_parameters", "ensemble_values"]


def bind_parameters(module: nn.Module, params: TensorDictBase, *, frozen: bool) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers are the tensors of ``params``: shared, not copied.

    ``params`` is a TensorDict laid out like the module (as ``TensorDict.from_module`` makes it, e.g. a
    :class:`~torchrl_dtql.DTQLLoss`'s ``actor_network_params``). With ``frozen=False`` the copy holds the very
    ``nn.Parameter`` objects of ``params`` (those an optimizer steps), so gradients land where the optimizer reads
    them. With ``frozen=True`` it holds detached aliases (same storage, ``requires_grad=False``), which follow every
    in-place update (optimizer steps, Polyak averaging, ``load_state_dict``) and never receive a gradient. Tensors
    that are replaced rather than updated in place are not followed: bind after moving the parameters' owner.

    Examples:
        >>> from tensordict import TensorDict
        >>> net = nn.Linear(2, 2)
        >>> params = TensorDict.from_module(net)
        >>> bound = bind_parameters(nn.Linear(2, 2), params, frozen=True)
        >>> _ = params["weight"].data.add_(1.0)  # an in-place update of the source...
        >>> bool((bound.weight == params["weight"]).all()), bound.weight.requires_grad  # ...is seen by the copy
        (True, False)
    """
    bound = copy.deepcopy(module)
    for key, value in params.items(include_nested=True, leaves_only=True):
        *path, name = key if isinstance(key, tuple) else (key,)
        owner = bound.get_submodule(".".join(path))
        if name in owner._parameters:
            owner._parameters[name] = nn.Parameter(value.detach(), requires_grad=False) if frozen else value
        elif name in owner._buffers:
            owner._buffers[name] = value
        else:
            raise KeyError(f"{type(module).__name__} has no parameter or buffer {'.'.join(map(str, key))!r}.")
    return bound


def ensemble_values(
    module: nn.Module,
    params: dict[str, Tensor],
    inputs: Sequence[Tensor],
    *,
    loop: bool,
    randomness: str = "different",
) -> Tensor:
    """``[E, *B, ...]``: ``module`` called on ``inputs`` once per member of the stacked ensemble ``params``.

    ``params`` maps the parameter (and buffer) names of ``module`` to tensors with a leading ensemble dimension.
    ``loop=False`` is one ``torch.vmap`` call (batched matmuls: best when compiled, where the bias and LayerNorm
    epilogues are fused); ``loop=True`` calls the members one after the other (``addmm`` with its bias and a native
    LayerNorm: best in eager mode on CPUs). Both give the same values up to float rounding, and gradients reach
    ``params``.

    Examples:
        >>> from torchrl_dtql.modules.critics import CriticMLP
        >>> net = CriticMLP(5, hidden_dim=8)
        >>> params = {k: torch.stack([v, v + 1]) for k, v in net.state_dict().items()}
        >>> x = torch.randn(4, 5)
        >>> a, b = ensemble_values(net, params, [x], loop=True), ensemble_values(net, params, [x], loop=False)
        >>> a.shape, bool(torch.allclose(a, b, atol=1e-5))
        (torch.Size([2, 4, 1]), True)
    """
    if loop:
        size = next(iter(params.values())).shape[0]
        members: list[dict[str, Tensor]] = [{} for _ in range(size)]
        for name, value in params.items():
            for member, tensor in zip(members, value.unbind(0)):
                member[name] = tensor
        return torch.stack([torch.func.functional_call(module, member, tuple(inputs)) for member in members])

    def one_member(member: dict[str, Tensor], *args: Tensor) -> Tensor:
        return torch.func.functional_call(module, member, args)

    in_dims = (0, *[None] * len(inputs))
    return torch.vmap(one_member, in_dims=in_dims, randomness=randomness)(params, *inputs)
