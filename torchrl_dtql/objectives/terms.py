r"""The DTQL loss terms as tensor functions: the one home of the maths that every training path calls.

:class:`~torchrl_dtql.DTQLLoss` (its ``*_loss`` methods, the plain path) and
:class:`~torchrl_dtql.DTQLUpdater` (the fused path behind :func:`~torchrl_dtql.dtql_update_step`) evaluate the
networks each in their own way (TensorDict modules and ``torch.vmap``, or private tensor-level copies), then hand
the network outputs to these functions. A change made here therefore changes training on every path, and neither
path has a formula of its own (``test/test_loss_terms.py`` checks both).

On a batch ``(s, a, r, s', terminated)`` with a Q ensemble of ``E`` members:

.. math::

    L_Q &= \sum_i d(Q_i(s, a), \mathrm{sg}[y]) \\
    L_V &= |\tau - 1(u < 0)|\, u^2, \quad u = \mathrm{sg}[\min_i Q_i(s, a)] - V(s) \\
    L_{BC} &= \ell_{EDM}(D_\phi; a, s) \\
    L_{TR} &= \ell_{EDM}(\mathrm{sg}[D_\phi]; a_\pi, s), \quad a_\pi \sim \pi_\theta(\cdot | s) \\
    L_\pi &= \alpha L_{TR} - \min_i Q_i(s, a_\pi) + \gamma_{nll} \mathrm{NLL}(a) \\
    L_{\log\alpha} &= \log\alpha \cdot \mathrm{sg}[\kappa\, L_{BC} - L_{TR}] \quad (\texttt{alpha="auto"} only)

where :math:`\ell_{EDM}` is the EDM-weighted denoising loss of the diffusion model
(:meth:`~torchrl_dtql.modules.diffusion_actor.EDMDiffusionModel.denoising_loss`: the EDM maths lives with the
preconditioning in :mod:`torchrl_dtql.modules`) and :math:`y` the Q target of the loss's value estimator (TorchRL's
``TD0Estimator`` by default, :math:`y = r + \gamma (1 - \text{terminated}) V(s')`), which both paths read through
:meth:`~torchrl_dtql.DTQLLoss.qvalue_target`. One function per term: :func:`qvalue_regression_loss` (with
:func:`td_error` for prioritized replay and the diagnostic :func:`mean_qvalue`), :func:`value_regression_loss` (on
:func:`expectile_loss`), :func:`behaviour_cloning_loss`, :func:`trust_region_loss` and :func:`actor_objective` (on
:func:`ensemble_min` and :func:`dataset_action_nll`; :func:`policy_scale` is its diagnostic), and, for the
self-tuning weight, :func:`trust_region_multiplier_loss` (``auto_alpha="multiplier"``) and
:func:`q_scaled_trust_region_weight` (``auto_alpha="q_scale"``).

Shapes: ``E`` ensemble members, ``*B`` batch dimensions, ``A`` action dimensions. Every function returns one value
per sample (``[*B]``): the caller reduces it with :meth:`~torchrl_dtql.DTQLLoss.reduce` (``reduction``, priority
weights and loss masks). Stop-gradients that belong to the maths (the Q target, the value regression's Q) are
applied here; freezing a network's weights (the trust region's diffusion model, the actor's critic) is the
caller's, who passes a module holding detached parameters.

Callers use these functions through the module (``terms.actor_objective(...)``), so each is looked up where it is
defined at every call.

Examples:
    >>> import torch
    >>> q_values = torch.tensor([[1.0, 2.0], [3.0, 0.5]])  # [E=2, B=2]
    >>> ensemble_min(q_values)
    tensor([1.0000, 0.5000])
    >>> actor_objective(torch.tensor([0.1, 0.2]), ensemble_min(q_values), torch.zeros(2), alpha=2.0, gamma_nll=0.0)
    tensor([-0.8000, -0.1000])
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torchrl.objectives.utils import distance_loss

__all__ = [
    "actor_objective",
    "behaviour_cloning_loss",
    "dataset_action_nll",
    "ensemble_min",
    "expectile_loss",
    "mean_qvalue",
    "policy_scale",
    "q_scaled_trust_region_weight",
    "qvalue_regression_loss",
    "td_error",
    "trust_region_loss",
    "trust_region_multiplier_loss",
    "trust_region_weight_scale",
    "value_regression_loss",
]


class DenoisingModel(Protocol):
    """What the diffusion terms need: the EDM-weighted denoising loss per sample (an ``EDMDiffusionModel``)."""

    def denoising_loss(self, action: Tensor, observation: Tensor, *, sigma: Tensor | None = None) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------- critic
def ensemble_min(q_values: Tensor) -> Tensor:
    """The pessimistic value ``min_i Q_i`` over the ensemble: ``[E, *B] -> [*B]``.

    Examples:
        >>> ensemble_min(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        tensor([ 0., -2.])
    """
    return q_values.amin(0)


def qvalue_regression_loss(q_values: Tensor, target: Tensor, loss_function: str = "l2") -> Tensor:
    """``L_Q = sum_i d(Q_i(s, a), sg[y])``: every ensemble member regressed on the bootstrapped target.

    Args:
        q_values: ``Q_i(s, a)`` on dataset actions, ``[E, *B]``.
        target: the target ``y`` (e.g. ``r + discount * (1 - terminated) * V(s')``), ``[*B]``; no gradient flows
            into it.
        loss_function: the distance ``d``, as TorchRL's ``distance_loss`` names it (``"l2"`` in the reference:
            ``(Q_i - y)^2``).

    Returns:
        the loss per sample, summed over the ensemble (not averaged, as the reference), ``[*B]``.

    Examples:
        >>> qvalue_regression_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0]))
        tensor([2.])
    """
    target = target.detach()
    return distance_loss(q_values, target.expand_as(q_values), loss_function=loss_function).sum(0)


def td_error(q_values: Tensor, target: Tensor) -> Tensor:
    """The squared TD error ``(Q_i(s, a) - y)^2`` per member, detached (for prioritized replay): ``[E, *B]``.

    Examples:
        >>> td_error(torch.tensor([[1.0], [4.0]]), torch.tensor([2.0]))
        tensor([[1.],
                [4.]])
    """
    return (q_values - target).pow(2).detach()


def mean_qvalue(q_values: Tensor) -> Tensor:
    """Diagnostic ``pred_value``: the ensemble's mean ``mean_i Q_i(s, a)``, detached: ``[E, *B] -> [*B]``.

    Examples:
        >>> mean_qvalue(torch.tensor([[1.0], [3.0]], requires_grad=True))
        tensor([2.])
    """
    return q_values.detach().mean(0)


def expectile_loss(diff: Tensor, expectile: Tensor | float) -> Tensor:
    """The asymmetric squared loss ``|expectile - 1(diff < 0)| * diff^2`` of IQL's value regression.

    Examples:
        >>> expectile_loss(torch.tensor([2.0, -2.0]), 0.7)
        tensor([2.8000, 1.2000])
    """
    weight = torch.where(diff < 0, 1 - expectile, expectile)
    return weight * diff.pow(2)


def value_regression_loss(q_values: Tensor, value: Tensor, expectile: Tensor | float) -> Tensor:
    """``L_V = expectile_loss(sg[min_i Q_i(s, a)] - V(s), tau)``: V fits an upper expectile of the in-sample Q.

    Args:
        q_values: ``Q_i(s, a)`` on dataset actions from the online ensemble, ``[E, *B]``; no gradient flows into
            them (the reference detaches them), so the Q regression's own forward can be passed.
        value: ``V(s)``, ``[*B]``.
        expectile: ``tau`` (0.7 for locomotion, 0.9 for AntMaze).

    Examples:
        >>> q_values = torch.tensor([[3.0, 0.0], [2.0, 1.0]])  # min: [2, 0]
        >>> value_regression_loss(q_values, torch.tensor([1.0, 1.0]), 0.9)  # u = [1, -1]
        tensor([0.9000, 0.1000])
    """
    return expectile_loss(ensemble_min(q_values.detach()) - value, expectile)


# ---------------------------------------------------------------------------------------------------- diffusion
def behaviour_cloning_loss(
    diffusion_model: DenoisingModel, action: Tensor, observation: Tensor, *, sigma: Tensor | None = None
) -> Tensor:
    """``L_BC``: the EDM denoising loss of the behaviour model on dataset actions, ``[*B]``.

    Args:
        diffusion_model: the behaviour model with trainable weights (an ``EDMDiffusionModel``).
        action: dataset actions ``[*B, A]``.
        observation: the states they were taken in ``[*B, obs]``.

    Keyword Args:
        sigma: noise levels ``[*B, 1]``; drawn by the model (truncated log-logistic) when omitted.

    Examples:
        >>> from torchrl_dtql import make_dtql_modules
        >>> model = make_dtql_modules(3, 2, hidden_dim=8)["diffusion_network"].module
        >>> behaviour_cloning_loss(model, torch.zeros(4, 2), torch.zeros(4, 3)).shape
        torch.Size([4])
    """
    return diffusion_model.denoising_loss(action, observation, sigma=sigma)


def trust_region_loss(
    frozen_diffusion_model: DenoisingModel,
    policy_action: Tensor,
    observation: Tensor,
    *,
    sigma: Tensor | None = None,
) -> Tensor:
    """``L_TR``: the behaviour model's denoising loss on the policy's actions ``a_pi`` (fresh noise level and noise).

    The gradient reaches the policy through ``a_pi``, both where it is noised and where it is the regression
    target; ``a_pi`` must not be detached. The diffusion weights must not move: pass a model whose parameters are
    detached (the caller's job; both paths do).

    Args:
        frozen_diffusion_model: the behaviour model with frozen (detached) weights.
        policy_action: reparameterised policy samples ``[*B, A]``.
        observation: the states ``[*B, obs]``.

    Keyword Args:
        sigma: noise levels ``[*B, 1]``; drawn by the model when omitted.

    Examples:
        >>> from torchrl_dtql import make_dtql_modules
        >>> model = make_dtql_modules(3, 2, hidden_dim=8)["diffusion_network"].module.requires_grad_(False)
        >>> a_pi = torch.zeros(4, 2, requires_grad=True)
        >>> trust_region_loss(model, a_pi, torch.zeros(4, 3)).sum().backward()
        >>> a_pi.grad.shape
        torch.Size([4, 2])
    """
    return frozen_diffusion_model.denoising_loss(policy_action, observation, sigma=sigma)


# ---------------------------------------------------------------------------------------------------- actor
def dataset_action_nll(dist: torch.distributions.Distribution, action: Tensor, atanh_eps: float = 1e-3) -> Tensor:
    """``-sum_d log N(atanh(u_d / (1 + eps)); loc_d, scale_d)`` of dataset actions ``u`` rescaled to [-1, 1], ``[*B]``.

    The reference's ``log_prob`` of the dataset action under the policy: no tanh Jacobian (it does not depend on the
    policy's parameters), and ``eps`` keeps ``atanh`` finite on boundary actions.

    Args:
        dist: the policy's TorchRL ``TanhNormal`` (``low``, ``high`` and the Gaussian ``base_dist``).
        action: dataset actions ``[*B, A]`` within ``[low, high]``.
        atanh_eps: the reference's ``1e-3``.

    Examples:
        >>> from torchrl.modules import TanhNormal
        >>> dist = TanhNormal(torch.zeros(1, 2), torch.ones(1, 2), low=-1.0, high=1.0)
        >>> nll = dataset_action_nll(dist, torch.zeros(1, 2))  # atanh(0) = 0: two standard-normal log-densities at 0
        >>> bool(torch.isclose(nll, torch.tensor([2 * 0.5 * torch.log(torch.tensor(2 * torch.pi))])).all())
        True
    """
    low, high = dist.low, dist.high
    unit = ((action - (high + low) / 2) / ((high - low) / 2)).clamp(-1.0, 1.0)
    pre_tanh = torch.atanh(unit / (1.0 + atanh_eps))
    return -dist.base_dist.log_prob(pre_tanh)


def actor_objective(
    trust_region: Tensor, min_q: Tensor, nll: Tensor, *, alpha: Tensor | float, gamma_nll: Tensor | float
) -> Tensor:
    """``L_pi = alpha * L_TR(a_pi) - min_i Q_i(s, a_pi) + gamma_nll * NLL(a_data)``, per sample ``[*B]``.

    The Q term is not normalised (DTQL, unlike Diffusion-QL, does not divide by ``|Q|``): ``alpha`` weighs the
    regulariser, which is why its per-task values span 0.5 to 1500.

    Args:
        trust_region: :func:`trust_region_loss` on the policy's actions, ``[*B]``.
        min_q: :func:`ensemble_min` of the frozen critic on the policy's actions, ``[*B]``.
        nll: :func:`dataset_action_nll`, ``[*B]``.

    Keyword Args:
        alpha: weight of the trust-region term.
        gamma_nll: weight of the dataset-action NLL term (not the discount).

    Examples:
        >>> actor_objective(torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([2.0]), alpha=5.0, gamma_nll=0.5)
        tensor([3.])
    """
    return alpha * trust_region - min_q + gamma_nll * nll


def trust_region_multiplier_loss(log_alpha: Tensor, trust_region: Tensor, target: Tensor) -> Tensor:
    """``L_log_alpha = log_alpha * sg[target - L_TR]``: the dual step of ``alpha`` as a Lagrange multiplier.

    DTQL with ``alpha="auto"`` reads the actor objective as the Lagrangian of *maximise min Q subject to
    L_TR(a_pi) <= target*: gradient descent on this loss raises ``log_alpha`` while the policy's trust-region loss is
    above the target and lowers it below (SAC tunes its entropy weight the same way). Both inputs are detached, so
    its gradient reaches ``log_alpha`` only.

    Args:
        log_alpha: the learnable ``log(alpha)`` (0-dim).
        trust_region: the batch's trust-region loss of the policy's actions (reduced to a scalar).
        target: the level it should hold (``trust_region_ratio`` x the behaviour model's denoising loss on the
            dataset actions, :meth:`~torchrl_dtql.DTQLLoss.trust_region_target`).

    Examples:
        >>> log_alpha = torch.zeros((), requires_grad=True)
        >>> trust_region_multiplier_loss(log_alpha, torch.tensor(2.0), torch.tensor(1.5)).backward()
        >>> log_alpha.grad  # negative: a descent step raises alpha, the trust region is above its target
        tensor(-0.5000)
    """
    return log_alpha * (target - trust_region).detach()


def q_scaled_trust_region_weight(q_data: Tensor, alpha_per_q: Tensor | float) -> Tensor:
    """``alpha = alpha_per_q * |mean Q(s, a_data)|``: the trust-region weight in units of the critic's own scale
    (``alpha="auto"``, ``auto_alpha="q_scale"``). The actor objective ``alpha * L_TR - Q`` is then
    ``|Q| * (alpha_per_q * L_TR - Q / |Q|)``: TD3+BC's normalised Q term, so one ``alpha_per_q`` serves every
    reward scale. Detached.

    Args:
        q_data: the Q values of the batch's dataset actions (any shape: ensemble members, samples).
        alpha_per_q: alpha per unit of ``|mean Q|``.

    Examples:
        >>> q_scaled_trust_region_weight(torch.tensor([[300.0, 100.0], [260.0, 140.0]]), 0.1)
        tensor(20.)
    """
    return alpha_per_q * q_data.detach().mean().abs()


def trust_region_weight_scale(min_q: Tensor, trust_region: Tensor) -> Tensor:
    """``|mean min_i Q_i(s, a_pi)| / mean L_TR(a_pi)``: the alpha at which the actor objective's two terms are the same
    size, the self-tuning weight's scale-free starting value (``alpha="auto"`` with ``alpha_init=None``).

    Rewards ``c`` times larger make Q, and so this value, ``c`` times larger: the multiplier then starts where the
    same run on the unscaled rewards starts, times ``c`` (TD3+BC's ``1 / |Q|`` normalisation, used once). Batch means
    only, so every update path computes it from the same diagnostics.

    Examples:
        >>> trust_region_weight_scale(torch.tensor([-100.0, 300.0]), torch.tensor([0.5, 1.5]))
        tensor(100.)
    """
    return min_q.detach().mean().abs() / trust_region.detach().mean().clamp_min(1e-8)


def policy_scale(dist: torch.distributions.Distribution) -> Tensor:
    """Diagnostic: the policy's Gaussian standard deviation averaged over action dimensions, detached, ``[*B]``.

    Zero (a 0-dim tensor) for a distribution without a Gaussian ``root_dist``.

    Examples:
        >>> from torchrl.modules import TanhNormal
        >>> policy_scale(TanhNormal(torch.zeros(3, 2), torch.full((3, 2), 0.5), low=-1.0, high=1.0))
        tensor([0.5000, 0.5000, 0.5000])
    """
    root = getattr(dist, "root_dist", None)
    if root is None:
        return torch.zeros(())
    return root.stddev.detach().mean(-1)
