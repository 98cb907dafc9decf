"""DTQL's acting modes by name: the policies an evaluation compares, built from a trained loss.

* ``"reranked"``: ``num_candidates`` one-step samples per state, one picked by ``softmax(min Q / temperature)``
  with the target critic (the paper's evaluation policy, :class:`~torchrl_dtql.QRerankingActor`);
* ``"mean"``: the one-step policy's mean action ``tanh(loc)``;
* ``"diffusion_bc"``: the behaviour-cloning diffusion model, sampled (plain diffusion BC trained with the same
  gradient steps: a baseline, slower to act).

Every policy reads the loss's parameters by reference, so one built before training acts with the latest weights.
A new mode is one entry of :data:`ACTING_MODES` and one branch of :func:`make_acting_policy`.
"""
from __future__ import annotations

from collections.abc import Sequence

from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType
from torchrl.objectives import LossModule

from torchrl_dtql.policies.functional import FunctionalPolicy
from torchrl_dtql.policies.reranking_actor import QRerankingActor


__all__ = ["ACTING_MODES", "UnknownActingModeError", "make_acting_policies", "make_acting_policy"]

#: The acting modes :func:`make_acting_policy` builds, the paper's first.
ACTING_MODES = ("reranked", "mean", "diffusion_bc")


class UnknownActingModeError(ValueError):
    """An acting mode that is not one of :data:`ACTING_MODES` (or no mode at all)."""


def make_acting_policy(
    loss: LossModule,
    mode: str,
    *,
    num_candidates: int = 1024,
    temperature: float = 1.0,
    use_target_qvalue: bool = True,
    compile: bool = False,
) -> TensorDictModuleBase:
    """The policy of one acting mode of :data:`ACTING_MODES`, reading ``loss``'s parameters by reference.

    Args:
        loss: a :class:`~torchrl_dtql.DTQLLoss`, or any loss with its public networks and parameters
            (``actor_network``, ``qvalue_network``, ``diffusion_network`` and their ``*_params``).
        mode: ``"reranked"``, ``"mean"`` or ``"diffusion_bc"``.

    Keyword Args:
        num_candidates: ``"reranked"``: candidate actions per state (reference: 1024).
        temperature: ``"reranked"``: softmax temperature on raw Q values; 0 means argmax.
        use_target_qvalue: ``"reranked"``: score with the target critic (reference) or the online one.
        compile: ``"reranked"``: ``torch.compile`` the scoring (see :class:`~torchrl_dtql.QRerankingActor`).

    Raises:
        UnknownActingModeError: ``mode`` is not an acting mode.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> policy = make_acting_policy(loss, "reranked", num_candidates=8)
        >>> policy(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """
    if mode == "reranked":
        return QRerankingActor.from_loss(
            loss, num_candidates, temperature, use_target_qvalue=use_target_qvalue, compile=compile
        )
    if mode == "mean":
        return FunctionalPolicy(loss.actor_network, loss.actor_network_params, ExplorationType.DETERMINISTIC)
    if mode == "diffusion_bc":
        return FunctionalPolicy(loss.diffusion_network, loss.diffusion_network_params, ExplorationType.RANDOM)
    raise UnknownActingModeError(f"unknown acting mode {mode!r}: choose among {list(ACTING_MODES)}.")


def make_acting_policies(loss: LossModule, modes: Sequence[str], **kwargs) -> dict[str, TensorDictModuleBase]:
    """``{mode: policy}`` for several acting modes, in the given order (keyword arguments as
    :func:`make_acting_policy`).

    Raises:
        UnknownActingModeError: a mode is unknown, or ``modes`` is empty; checked before any policy is built.

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> list(make_acting_policies(loss, ["mean", "reranked"], num_candidates=8))
        ['mean', 'reranked']
    """
    unknown = [mode for mode in modes if mode not in ACTING_MODES]
    if unknown or not modes:
        raise UnknownActingModeError(
            f"unknown acting mode(s) {unknown}: choose among {list(ACTING_MODES)}."
            if unknown
            else f"no acting mode given: choose among {list(ACTING_MODES)}."
        )
    return {mode: make_acting_policy(loss, mode, **kwargs) for mode in modes}
