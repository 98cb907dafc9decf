"""``torch.compile`` for the fast paths: an inductor backend that keeps eager random streams."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["make_inductor_backend"]


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
