"""Fast building blocks shared by the fast update (:mod:`torchrl_dtql.objectives.fast_update`) and the fast actors.

* :func:`mish_via_exp` and :class:`ExpMish`: Mish computed from one ``exp``, the same function to within float
  rounding. On CPUs whose vectorised ``tanh`` is slow (this project's reference machine) ATen's Mish costs as much
  as the matmuls around it; this form is about twice as fast eagerly (forward and backward) and about five times
  when compiled, where it fuses with its neighbours.
* :func:`replace_mish_`: swaps every ``nn.Mish`` of a module (a private copy: never the user's) for ``ExpMish``.
* :func:`bind_parameters`: a private copy of a network that holds given parameter tensors (shared, not copied).
* :func:`ensemble_values`: a stacked ensemble (the twin Q) called on plain tensors, vmapped or looped.
* :func:`make_inductor_backend`: a ``torch.compile`` backend that keeps eager random streams.

Examples:
    >>> import torch
    >>> net = replace_mish_(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Mish()))
    >>> type(net[1]).__name__
    'ExpMish'
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn, Tensor

__all__ = ["ExpMish", "bind_parameters", "ensemble_values", "make_inductor_backend", "mish_via_exp", "replace_mish_"]

# tanh(softplus(x)) rounds to exactly 1 in float32 for x > 20, and exp(20)^2 ~ 2.4e17 is far from overflow
_EXP_CLAMP = 20.0


def mish_via_exp(x: Tensor) -> Tensor:
    """``mish(x) = x tanh(softplus(x))`` written with one ``exp``: ``x n / (n + 2)`` with ``n = e^x (e^x + 2)``.

    ``tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1)``, hence the form above. It is the same function to
    within float rounding, accurate for very negative ``x`` (it tends to ``x e^x`` without cancellation), and
    autograd differentiates it correctly.

    Examples:
        >>> x = torch.linspace(-30, 30, 1001)
        >>> bool(torch.allclose(mish_via_exp(x), torch.nn.functional.mish(x), rtol=1e-6, atol=1e-6))
        True
    """
    e = torch.exp(x.clamp(max=_EXP_CLAMP))
    n = e * (e + 2)
    return x * n / (n + 2)


def _mish_in_place_passes(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(mish(x), tanh(softplus(x)))`` with few kernels, every intermediate reused in place."""
    e = x.clamp(max=_EXP_CLAMP).exp_()
    n = e.add(2.0).mul_(e)
    t = n.div_(n + 2.0)
    return x * t, t


class _MishFunction(torch.autograd.Function):
    """Eager Mish with few, in-place passes: saves ``tanh(softplus(x))`` for a cheap backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y, t = _mish_in_place_passes(x)
        ctx.save_for_backward(x, t)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        x, t = ctx.saved_tensors
        # d/dx [x t] = t + x (1 - t^2) sigmoid(x), since d softplus / dx = sigmoid
        return t.square().neg_().add_(1.0).mul_(x).mul_(torch.sigmoid(x)).add_(t).mul_(grad)


class ExpMish(nn.Module):
    """A drop-in ``nn.Mish`` built on :func:`mish_via_exp` (a hand-written backward in eager mode).

    Examples:
        >>> x = torch.randn(5, requires_grad=True)
        >>> bool(torch.allclose(ExpMish()(x), torch.nn.functional.mish(x), atol=1e-6))
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return mish_via_exp(x)  # inductor fuses it with its autodiff
        if torch.is_grad_enabled() and x.requires_grad:
            return _MishFunction.apply(x)
        return _mish_in_place_passes(x)[0]  # no graph to record: skip the autograd.Function machinery


def replace_mish_(module: nn.Module) -> nn.Module:
    """Replaces, in place, every ``nn.Mish`` inside ``module`` by :class:`ExpMish`; returns ``module``.

    Use it on private copies only: the networks a user passed must keep their own modules.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Mish(), nn.Sequential(nn.Mish()))
        >>> [type(m).__name__ for m in replace_mish_(net).modules()][1:]
        ['Linear', 'ExpMish', 'Sequential', 'ExpMish']
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Mish):
            setattr(module, name, ExpMish())
        else:
            replace_mish_(child)
    return module


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


def make_inductor_backend(mode: str | None = None) -> Callable:
    """A ``torch.compile`` backend: inductor, drawing random numbers exactly as eager code does.

    Inductor's own random number generator differs from ATen's; ``fallback_random`` makes compiled code call
    ATen's, so a compiled step and an eager step draw the same numbers from the same seed. ``mode`` is a
    ``torch.compile`` mode name (``None``: the default mode).

    Examples:
        >>> f = torch.compile(lambda x: x + torch.randn_like(x), backend=make_inductor_backend())
        >>> x = torch.zeros(8)
        >>> _ = torch.manual_seed(0); expected = x + torch.randn_like(x)
        >>> _ = torch.manual_seed(0); bool((f(x) == expected).all())
        True
    """
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    config_patches = {**list_mode_options(mode or "default"), "fallback_random": True}

    def backend(graph_module: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable:
        return compile_fx(graph_module, example_inputs, config_patches=config_patches)

    return backend
