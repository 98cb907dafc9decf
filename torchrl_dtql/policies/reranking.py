"""Q-reranking as tensor maths: lay candidates out per state, then pick one per state by its ``min Q``.

DTQL's evaluation policy draws ``N`` candidate actions per state from the one-step policy, scores them with the
minimum over the Q ensemble and keeps one, sampled from ``softmax(min_q / temperature)`` (``temperature == 0``:
the argmax). Every implementation of that policy in this project (:class:`~torchrl_dtql.QRerankingActor`, the
exportable :class:`~torchrl_dtql.policies.ExportablePolicy`, the plain reference in ``benchmarks/bench_acting.py``)
calls :func:`rerank` for the choice, so they draw the same random numbers in the same order, and
:func:`repeat_for_candidates` for the layout of the candidates (state-major: the ``N`` candidates of state 0, then
those of state 1, ...).

Examples:
    >>> import torch
    >>> candidates = torch.tensor([[[0.0], [1.0], [2.0]]])  # one state, three candidate actions
    >>> rerank(candidates, torch.tensor([[0.5, 3.0, 1.0]]), temperature=0.0)
    tensor([[1.]])
    >>> repeat_for_candidates(torch.tensor([[1.0], [2.0]]), 2).flatten().tolist()
    [1.0, 1.0, 2.0, 2.0]
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["repeat_for_candidates", "rerank"]


def repeat_for_candidates(value: Tensor, num_candidates: int, *, batch_dims: int = 1) -> Tensor:
    """``[*B, *F] -> [prod(B) * N, *F]``: each state's features repeated for its ``N`` candidates, state-major.

    This is the layout of the reference (the policy run on ``N`` copies of every state) and of the candidates of
    :func:`rerank` once flattened: row ``b * N + n`` is candidate ``n`` of state ``b``.

    Args:
        value: per-state features, with ``batch_dims`` leading batch dimensions.
        num_candidates: ``N``.

    Keyword Args:
        batch_dims: how many leading dimensions of ``value`` are batch dimensions.

    Examples:
        >>> repeat_for_candidates(torch.zeros(2, 3, 5), 4, batch_dims=2).shape
        torch.Size([24, 5])
    """
    batch_shape, feature_shape = value.shape[:batch_dims], value.shape[batch_dims:]
    repeated = value.unsqueeze(batch_dims).expand(*batch_shape, num_candidates, *feature_shape)
    return repeated.reshape(-1, *feature_shape)


def rerank(
    candidates: Tensor, min_q: Tensor, temperature: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """One candidate per state, chosen by its ``min Q``: ``[*B, N, act], [*B, N] -> [*B, act]``.

    With ``temperature > 0`` the index is sampled from ``softmax(min_q / temperature)`` by one
    :func:`torch.multinomial` call over the flattened states (one uniform draw per state, in state order); with
    ``temperature == 0`` it is the argmax and nothing is drawn.

    Args:
        candidates: ``N`` candidate actions per state.
        min_q: their scores, the minimum over the Q ensemble.
        temperature: softmax temperature on the raw scores; 0 means argmax.

    Keyword Args:
        generator: the random generator of the draw (``None``: torch's default one).

    Examples:
        >>> candidates = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])  # two states, two candidates each
        >>> min_q = torch.tensor([[0.0, 50.0], [50.0, 0.0]])  # so peaked that sampling is (almost) the argmax
        >>> rerank(candidates, min_q, 1.0, generator=torch.Generator().manual_seed(0))
        tensor([[1.],
                [2.]])
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}.")
    batch_shape, num_candidates = min_q.shape[:-1], min_q.shape[-1]
    if temperature == 0:
        index = min_q.argmax(-1)
    else:
        probs = torch.softmax(min_q / temperature, dim=-1)
        index = torch.multinomial(probs.reshape(-1, num_candidates), 1, generator=generator).reshape(batch_shape)
    index = index[..., None, None].expand(*batch_shape, 1, candidates.shape[-1])
    return candidates.gather(-2, index).squeeze(-2)
