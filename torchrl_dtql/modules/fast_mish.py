"""Mish computed from one ``exp``: the same function as ``nn.Mish`` to within float rounding, and faster.

On CPUs whose vectorised ``tanh`` is slow (this project's reference machine) ATen's Mish costs as much as the matmuls
around it; this form is about twice as fast eagerly (forward and backward) and about five times when compiled, where
it fuses with its neighbours. The fast update and the fast acting paths run private copies of the networks with it
(:func:`replace_mish_`); the user's modules are never changed.

Examples:
    >>> import torch
    >>> net = replace_mish_(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Mish()))
    >>> type(net[1]).__name__
    'ExpMish'
"""
from __future__ import annotations

import torch
from torch import nn, Tensor

__all__ = ["ExpMish", "mish_via_exp", "replace_mish_"]

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
