"""``DTQLLoss``: Diffusion Trusted Q-Learning (Chen, Wang and Zhou, NeurIPS 2024) as a TorchRL loss module."""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch, TensorDictModule
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import _cache_values, _vmap_func, dispatch_value_estimator, ValueEstimators
from torchrl.objectives.value import TD1Estimator, TDLambdaEstimator, ValueEstimatorBase

from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor
from torchrl_dtql.objectives import terms
from torchrl_dtql.objectives.checks import action_dim_of, check_batch, check_network_sizes

__all__ = ["ALPHA_PER_Q", "AUTO_ALPHA_RULES", "DTQLLoss"]

#: The ways ``alpha="auto"`` tunes the trust-region weight (``DTQLLoss(auto_alpha=...)``); the first is the default.
AUTO_ALPHA_RULES = ("q_scale", "multiplier")
#: ``auto_alpha="q_scale"``'s alpha per unit of ``|mean Q|``: the fixed alphas that worked here sit at 0.03-0.3 of
#: ``|Q|`` on halfcheetah medium and about 0.07 on the embedded hopper set (docs/self_tuning_alpha.md).
ALPHA_PER_Q = 0.1

_PARAM_NAMES = (
    "actor_network_params",
    "diffusion_network_params",
    "qvalue_network_params",
    "value_network_params",
    "target_actor_network_params",
    "target_diffusion_network_params",
    "target_qvalue_network_params",
    "target_value_network_params",
)


# Value estimators whose targets run along a time dimension (multi-step returns): they need trajectory batches.
_MULTI_STEP_ESTIMATORS = (TD1Estimator, TDLambdaEstimator)


class DTQLLoss(LossModule):
    r"""Diffusion Trusted Q-Learning: an IQL critic, an EDM behaviour-cloning diffusion model and a one-step policy.

    Presented in "Diffusion Policies creating a Trust Region for Offline Reinforcement Learning"
    (Chen, Wang, Zhou, NeurIPS 2024, https://arxiv.org/abs/2405.19690). The losses match the authors' code
    (``TianyuCodings/Diffusion_Trusted_Q_Learning``); on a batch ``(s, a, r, s', terminated)``:

    .. math::

        L_V &= \mathbb{E}\left[|\tau - 1(\bar q - V(s) < 0)|\,(\bar q - V(s))^2\right],
            \quad \bar q = \mathrm{sg}[\min_i Q_i(s, a)] \\
        L_Q &= \sum_i \mathbb{E}\left[(Q_i(s, a) - r - \gamma (1 - d)\,\mathrm{sg}[V(s')])^2\right] \\
        L_{BC} &= \mathbb{E}_{\sigma, \epsilon}\left[\tfrac{1}{c_{out}(\sigma)^2}
            \overline{(D_\phi(a + \sigma\epsilon, s, \sigma) - a)^2}\right] \\
        L_\pi &= \alpha\, L_{TR} - \mathbb{E}[\min_i Q_i(s, a_\pi)] + \gamma_{nll}\,\mathbb{E}[-\log \pi(a|s)],
            \quad a_\pi \sim \pi_\theta(\cdot|s)

    where the trust-region loss :math:`L_{TR}` is :math:`L_{BC}` evaluated on the policy's reparameterised actions
    :math:`a_\pi` with the diffusion weights frozen (gradient flows through :math:`a_\pi` only), the bar is a mean
    over action dimensions and the Q term is not normalised. The critic sees dataset actions only. The reference
    trains the three parts with three Adam optimizers, in the order critic, diffusion, actor on one shared batch
    (see :func:`~torchrl_dtql.dtql_update_step`); each part is a public method returning ``(loss, metadata)``.
    The maths of every term is a function of :mod:`torchrl_dtql.objectives.terms`, which these methods and the
    fused :class:`~torchrl_dtql.DTQLUpdater` both call; the public helpers :attr:`observation_key`,
    :meth:`check_inputs`, :meth:`reduce`, :meth:`reduction_in_keys` and :meth:`qvalue_target` are what the updater
    shares with them.

    Args:
        actor_network: the one-step policy, a ``ProbabilisticActor`` with a ``TanhNormal``
            (:func:`~torchrl_dtql.make_one_step_actor`).
        diffusion_network: the :class:`~torchrl_dtql.EDMDiffusionActor` behaviour model.
        qvalue_network: a Q ``ValueOperator`` (copied ``num_qvalue_nets`` times with re-sampled weights) or a list
            of them (stacked as they are; the reference's twin Q).
        value_network: the state-value ``ValueOperator``.

    Keyword Args:
        alpha: weight of the trust-region term (per-task in the reference: 0.5 to 1500), or ``"auto"``: tuned by the
            rule ``auto_alpha`` names, for one setting that serves every task (``docs/self_tuning_alpha.md``). The
            ``alpha`` buffer holds the current weight; the actor objective reads it as a fixed alpha.
        auto_alpha: how ``alpha="auto"`` tunes it (:data:`AUTO_ALPHA_RULES`).

            * ``"q_scale"`` (the default, what the measurements favour): before every actor step alpha is set to
              ``alpha_per_q`` times the batch's ``|mean Q(s, a_data)|``
              (:func:`~torchrl_dtql.objectives.terms.q_scaled_trust_region_weight`): the Q term is measured in
              units of the critic's own scale, as TD3+BC normalises its Q term. Rewards ``c`` times larger give an
              alpha ``c`` times larger, and the critic's growth early in training is followed. No optimizer.
            * ``"multiplier"``: a Lagrange multiplier (a learnable :attr:`log_alpha` with its own optimizer, which
              :func:`~torchrl_dtql.make_dtql_optimizers` builds and both update paths step after the actor) that
              holds the policy's trust-region loss at :meth:`trust_region_target`, ``trust_region_ratio`` times the
              behaviour model's own denoising loss on the batch's dataset actions.
        trust_region_ratio: with ``auto_alpha="multiplier"``, the target trust-region loss over the dataset actions'
            own denoising loss (1: the policy's actions as typical, for the behaviour model, as the data's).
        alpha_init: with ``auto_alpha="multiplier"``, the multiplier's starting value; ``None`` (the default): set
            from the data at the first multiplier step, ``|mean min Q(s, a_pi)| / mean L_TR(a_pi)``
            (:func:`~torchrl_dtql.objectives.terms.trust_region_weight_scale`), which scales with the rewards.
        alpha_per_q: with ``auto_alpha="q_scale"``, alpha per unit of ``|mean Q|`` (default :data:`ALPHA_PER_Q`).
        gamma_nll: weight of the dataset-action NLL term (the reference's ``gamma``: 1 on AntMaze, else 0). It is
            ``-sum_d log N(atanh(a_d / (1 + nll_atanh_eps)); mu_d, std_d)`` with actions rescaled to [-1, 1] and no
            tanh Jacobian, as in the reference. Not the discount: set that with ``make_value_estimator(gamma=...)``
            (default 0.99).
        expectile: the expectile of the value regression (0.7 for locomotion, 0.9 for AntMaze).
        num_qvalue_nets: size of the Q ensemble.
        loss_function: distance used for the Q regression (``"l2"`` as the reference).
        nll_atanh_eps: the ``1e-3`` that keeps ``atanh`` finite in the NLL term.
        check_finite: raise on NaN/inf inputs, naming the key. Costs a device-to-host sync per checked tensor on
            accelerators; turn off for the fastest GPU training once the data are known to be clean.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses and diagnostics).
        deactivate_vmap: evaluate the Q ensemble with a Python loop instead of ``torch.vmap``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> n_obs, n_act, batch = 3, 2, 8
        >>> loss = DTQLLoss(**make_dtql_modules(n_obs, n_act, hidden_dim=32), alpha=1.0)
        >>> data = TensorDict(
        ...     observation=torch.randn(batch, n_obs),
        ...     action=torch.rand(batch, n_act) * 2 - 1,
        ...     next=TensorDict(
        ...         observation=torch.randn(batch, n_obs),
        ...         reward=torch.randn(batch, 1),
        ...         done=torch.zeros(batch, 1, dtype=torch.bool),
        ...         terminated=torch.zeros(batch, 1, dtype=torch.bool),
        ...         batch_size=[batch],
        ...     ),
        ...     batch_size=[batch],
        ... )
        >>> out = loss(data)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_diffusion', 'loss_qvalue', 'loss_value']

    The keyword (``@dispatch``) form returns a tuple ordered like ``out_keys``:

        >>> _ = loss.select_out_keys("loss_actor", "loss_qvalue")
        >>> loss_actor, loss_qvalue = loss(
        ...     observation=data["observation"],
        ...     action=data["action"],
        ...     next_observation=data["next", "observation"],
        ...     next_reward=data["next", "reward"],
        ...     next_done=data["next", "done"],
        ...     next_terminated=data["next", "terminated"],
        ... )
    """

    @dataclass
    class _AcceptedKeys:
        """Maintains default values for all configurable tensordict keys.

        Attributes:
            action (NestedKey): the dataset action. Defaults to ``"action"``.
            state_action_value (NestedKey): written by the Q networks. Defaults to ``"state_action_value"``.
            value (NestedKey): written by the value network. Defaults to ``"state_value"``.
            reward (NestedKey): the reward (read under ``"next"``). Defaults to ``"reward"``.
            done (NestedKey): end of trajectory (read under ``"next"``). Defaults to ``"done"``.
            terminated (NestedKey): true termination, the bootstrap mask (read under ``"next"``).
                Defaults to ``"terminated"``.
            priority (NestedKey): where the TD error is written for prioritized replay. Defaults to ``"td_error"``.
            priority_weight (NestedKey): importance weights of prioritized samples. Defaults to
                ``"priority_weight"``.
        """

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        value: NestedKey = "state_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        priority: NestedKey = "td_error"
        priority_weight: NestedKey = "priority_weight"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    #: The functional parameter sets of the loss (their weak references are cleared after each call).
    param_names = _PARAM_NAMES
    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda)
    _schedulable_buffers = frozenset({"alpha", "gamma_nll", "expectile"})
    #: The bounds of the learnt ``alpha`` (``alpha="auto"``), wider than the reference's per-task 0.5 to 1500.
    alpha_range: tuple[float, float] = (1e-3, 1e5)

    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "loss_diffusion",
        "trust_region",
        "min_q_actor",
        "nll_data",
        "policy_std",
        "pred_value",
        "target_value",
    ]

    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    diffusion_network: EDMDiffusionActor
    diffusion_network_params: TensorDictParams
    target_diffusion_network_params: TensorDictParams
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        diffusion_network: EDMDiffusionActor,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        *,
        alpha: float | str = 1.0,
        auto_alpha: str = AUTO_ALPHA_RULES[0],
        trust_region_ratio: float = 1.0,
        alpha_init: float | None = None,
        alpha_per_q: float = ALPHA_PER_Q,
        gamma_nll: float = 0.0,
        expectile: float = 0.7,
        num_qvalue_nets: int = 2,
        loss_function: str = "l2",
        nll_atanh_eps: float = 1e-3,
        check_finite: bool = True,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
    ) -> None:
        self._in_keys = None
        self._out_keys = None
        if reduction is None:
            reduction = "mean"
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__()
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}.")
        if isinstance(alpha, str):
            if alpha != "auto":
                raise ValueError(f"alpha must be a number or 'auto', got {alpha!r}.")
            if auto_alpha not in AUTO_ALPHA_RULES:
                raise ValueError(f"auto_alpha must be one of {AUTO_ALPHA_RULES}, got {auto_alpha!r}.")
            if auto_alpha == "q_scale" and not alpha_per_q > 0:
                raise ValueError(f"auto_alpha='q_scale' needs alpha_per_q > 0, got {alpha_per_q}.")
            if not trust_region_ratio > 0 or (alpha_init is not None and not alpha_init > 0):
                raise ValueError(
                    f"alpha='auto' needs trust_region_ratio > 0 and alpha_init > 0, got {trust_region_ratio}, "
                    f"{alpha_init}."
                )
        elif alpha < 0 or gamma_nll < 0:
            raise ValueError(f"alpha and gamma_nll must be >= 0, got alpha={alpha}, gamma_nll={gamma_nll}.")
        if gamma_nll < 0:
            raise ValueError(f"gamma_nll must be >= 0, got {gamma_nll}.")
        if not callable(getattr(getattr(diffusion_network, "module", None), "denoising_loss", None)):
            raise TypeError(
                "diffusion_network must be an EDMDiffusionActor (a module whose `.module.denoising_loss` computes "
                f"the EDM loss), got {type(diffusion_network).__name__}."
            )
        if isinstance(qvalue_network, (list, tuple)):
            if len(qvalue_network) != num_qvalue_nets:
                num_qvalue_nets = len(qvalue_network)
        self.num_qvalue_nets = num_qvalue_nets
        self.deactivate_vmap = deactivate_vmap
        self.loss_function = loss_function
        self.nll_atanh_eps = nll_atanh_eps
        self.check_finite = check_finite
        self.reduction = reduction
        self.learns_alpha = alpha == "auto"
        #: ``"multiplier"`` or ``"q_scale"`` with ``alpha="auto"``, else ``None``.
        self.auto_alpha = auto_alpha if self.learns_alpha else None
        if self.auto_alpha == "q_scale":
            self.register_coeff_buffer("alpha_per_q", float(alpha_per_q))
            self.out_keys = [*self.out_keys, "alpha"]
            alpha = 1.0  # set from the batch before every actor step (scale_alpha_)
        elif self.learns_alpha:
            low, high = self.alpha_range
            self.register_buffer("alpha_initialized", torch.tensor(alpha_init is not None))
            alpha_init = 1.0 if alpha_init is None else min(max(float(alpha_init), low), high)
            self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(alpha_init)))
            self.register_coeff_buffer("trust_region_ratio", float(trust_region_ratio))
            self.out_keys = [*self.out_keys, "loss_alpha", "alpha", "trust_region_target"]
            alpha = alpha_init
        self.register_coeff_buffer("alpha", float(alpha))
        self.register_coeff_buffer("gamma_nll", float(gamma_nll))
        self.register_coeff_buffer("expectile", float(expectile))

        check_network_sizes(actor_network, diffusion_network, qvalue_network)
        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        self.convert_to_functional(diffusion_network, "diffusion_network", create_target_params=False)
        self.convert_to_functional(value_network, "value_network", create_target_params=False)
        self.convert_to_functional(
            qvalue_network,
            "qvalue_network",
            None if num_qvalue_nets == 1 and not isinstance(qvalue_network, (list, tuple)) else num_qvalue_nets,
            create_target_params=True,
        )
        if self.qvalue_network_params.ndim == 0:
            raise ValueError("DTQLLoss needs a stacked Q ensemble; pass num_qvalue_nets >= 1 or a list of modules.")
        self._make_vmap()
        # built eagerly (TD0, discount 0.99) so that state_dicts have the same keys before and after the first call
        self.make_value_estimator()

    # ------------------------------------------------------------------ set-up helpers
    def _make_vmap(self) -> None:
        self._vmap_qvalue_networkN0 = _vmap_func(
            self.qvalue_network, (None, 0), randomness=self.vmap_randomness, pseudo_vmap=self.deactivate_vmap
        )

    @property
    @_cache_values
    def _cached_detach_qvalue_params(self) -> TensorDictBase:
        return self.qvalue_network_params.detach()

    @property
    @_cache_values
    def _cached_detach_diffusion_params(self) -> TensorDictBase:
        return self.diffusion_network_params.detach()

    def _set_in_keys(self) -> None:
        keys = [
            self.tensor_keys.action,
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.done),
            ("next", self.tensor_keys.terminated),
            *self.actor_network.in_keys,
            *[("next", key) for key in self.value_network.in_keys],
            *self.qvalue_network.in_keys,
            *self.value_network.in_keys,
            *self.diffusion_network.in_keys,
        ]
        self._in_keys = list(dict.fromkeys(keys))

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    @property
    def observation_key(self) -> NestedKey:
        """The entry holding the state ``s`` (the diffusion model's conditioning input, its first in_key).

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16)).observation_key
            'observation'
        """
        return self.diffusion_network.in_keys[0]

    # ------------------------------------------------------------------ input checks
    @property
    def _action_dim(self) -> int | None:
        return action_dim_of(self.actor_network)

    def check_inputs(self, tensordict: TensorDictBase, keys: list[NestedKey] | None = None) -> None:
        """Fails early, naming the key, on missing entries, wrong action or reward shapes, or non-finite values.

        Every loss method checks the entries it reads; :func:`~torchrl_dtql.dtql_update_step` checks the whole
        batch once per step. Finiteness is checked only with ``check_finite=True`` (a device-to-host sync per
        tensor).

        Args:
            tensordict: the batch.
            keys: the entries to check; all of :attr:`in_keys` when omitted.

        Examples:
            >>> from tensordict import TensorDict
            >>> from torchrl_dtql import make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16))
            >>> batch = TensorDict(observation=torch.zeros(4, 3), batch_size=[4])
            >>> loss.check_inputs(batch, ["action"])  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            KeyError: "DTQLLoss: the batch has no entry 'action'. Present keys: ['observation']. ..."
        """
        check_batch(
            tensordict,
            list(self.in_keys) if keys is None else keys,
            action_key=self.tensor_keys.action,
            action_dim=self._action_dim,
            reward_key=("next", self.tensor_keys.reward),
            check_finite=self.check_finite,
        )

    def _critic_keys(self) -> list[NestedKey]:
        return list(
            dict.fromkeys(
                [
                    self.tensor_keys.action,
                    *self.qvalue_network.in_keys,
                    *self.value_network.in_keys,
                    *[("next", key) for key in self.value_network.in_keys],
                    ("next", self.tensor_keys.reward),
                    ("next", self.tensor_keys.terminated),
                    ("next", self.tensor_keys.done),
                ]
            )
        )

    # ------------------------------------------------------------------ reduction and the Q target
    def reduce(self, loss: Tensor, tensordict: TensorDictBase) -> Tensor:
        """A per-sample loss ``[*B]`` reduced as the loss is configured: ``reduction`` (mean, sum or none), the
        batch's prioritized-replay weights and its loss masks (the entries of :meth:`reduction_in_keys`).

        Examples:
            >>> from tensordict import TensorDict
            >>> from torchrl_dtql import make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16))
            >>> loss.reduce(torch.tensor([1.0, 3.0]), TensorDict(batch_size=[2]))
            tensor(2.)
        """
        return self._reduce_loss(loss, tensordict=tensordict, weights=self._maybe_get_priority_weight(tensordict))

    def reduction_in_keys(self) -> list[NestedKey]:
        """The optional entries :meth:`reduce` reads when a batch has them: loss masks, then priority weights.

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16)).reduction_in_keys()[-1]
            'priority_weight'
        """
        keys = list(self._loss_mask_keys())
        if self.use_prioritized_weights in (True, "auto"):
            keys.append(self.tensor_keys.priority_weight)
        return keys

    def qvalue_target(self, tensordict: TensorDictBase, next_value: Tensor | None = None) -> Tensor:
        """The target ``y`` of the Q regression, ``[*B]``: the value estimator's, with V frozen.

        With the default TD0 estimator, ``y = r + discount * (1 - terminated) * V(s')`` (bootstrapping through
        ``("next", "terminated")``, not ``done``). Multi-step estimators (TD1, TD(lambda)) need trajectory batches
        whose time dimension is named ``"time"`` (or an estimator built with ``time_dim``): on anything else this
        raises rather than read independently sampled transitions as one trajectory.

        Args:
            tensordict: the batch.
            next_value: ``V(s')`` ``[*B, 1]`` when the caller has computed it (the fused updater does, with the
                same frozen weights); the estimator evaluates the value network when omitted.

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> from tensordict import TensorDict
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16))
            >>> batch = TensorDict(next=TensorDict(reward=torch.ones(2, 1), done=torch.tensor([[False], [True]]),
            ...     terminated=torch.tensor([[False], [True]]), batch_size=[2]), batch_size=[2])
            >>> loss.qvalue_target(batch, next_value=torch.full((2, 1), 10.0))  # 1 + 0.99 * 10, then 1
            tensor([10.9000,  1.0000])
        """
        estimator = self.value_estimator
        if isinstance(estimator, _MULTI_STEP_ESTIMATORS):
            self._check_trajectory_batch(tensordict, estimator)
        return estimator.value_estimate(
            tensordict, target_params=self.target_value_network_params, next_value=next_value
        ).squeeze(-1)

    @staticmethod
    def _check_trajectory_batch(tensordict: TensorDictBase, estimator: ValueEstimatorBase) -> None:
        """Refuses a batch a multi-step estimator would misread as one trajectory (see :meth:`make_value_estimator`)."""
        if getattr(estimator, "time_dim", None) is not None or "time" in tensordict.names:
            return
        name = type(estimator).__name__
        raise ValueError(
            f"DTQLLoss: the {name} value estimator computes multi-step returns along a time dimension, but this "
            f"batch (batch_size {tuple(tensordict.batch_size)}) names none. TorchRL would read its last dimension as "
            "one trajectory: on independently sampled transitions (a uniform replay buffer) every target would "
            "bootstrap through the next, unrelated row and be silently wrong. DTQL uses the one-step TD0 target "
            "r + discount * (1 - terminated) * V(s'): call loss.make_value_estimator(ValueEstimators.TD0) (the "
            f"default). To use {name}, train on trajectory slices [B, T] (e.g. a SliceSampler batch reshaped to "
            "[B, T]) and name their time dimension (batch.names = [None, 'time']), or build the estimator with an "
            "explicit time_dim."
        )

    # ------------------------------------------------------------------ the four losses
    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``sum_i (Q_i(s, a) - y)^2`` with ``y`` from :meth:`qvalue_target` (TD0: ``r + discount * (1 - terminated)
        * V(s')``, V frozen).

        Returns the reduced loss and ``{"td_error": [E, *B], "pred_value": [*B], "target_value": [*B]}``.
        """
        keys = self._critic_keys()
        self.check_inputs(tensordict, keys)
        data = tensordict.select(*keys, strict=False)
        target_value = self.qvalue_target(data)
        q_td = self._vmap_qvalue_networkN0(
            data.select(*self.qvalue_network.in_keys, strict=False), self.qvalue_network_params
        )
        q_values = q_td.get(self.tensor_keys.state_action_value).squeeze(-1)
        loss = self.reduce(terms.qvalue_regression_loss(q_values, target_value, self.loss_function), tensordict)
        metadata = {
            "td_error": terms.td_error(q_values, target_value),
            "pred_value": terms.mean_qvalue(q_values),
            "target_value": target_value.detach(),
        }
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, metadata

    def value_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The expectile regression of ``V(s)`` on ``min_i Q_i(s, a)`` (online Q, detached; dataset actions)."""
        keys = list(dict.fromkeys([self.tensor_keys.action, *self.qvalue_network.in_keys, *self.value_network.in_keys]))
        self.check_inputs(tensordict, keys)
        q_td = self._vmap_qvalue_networkN0(
            tensordict.select(*self.qvalue_network.in_keys, strict=False), self._cached_detach_qvalue_params
        )
        q_values = q_td.get(self.tensor_keys.state_action_value).squeeze(-1)
        v_td = tensordict.select(*self.value_network.in_keys, strict=False)
        with self.value_network_params.to_module(self.value_network):
            v_td = self.value_network(v_td)
        value = v_td.get(self.tensor_keys.value).squeeze(-1)
        loss = self.reduce(terms.value_regression_loss(q_values, value, self.expectile), tensordict)
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, {"state_value": value.detach()}

    def diffusion_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The EDM behaviour-cloning loss on dataset actions (moves the diffusion weights only)."""
        self.check_inputs(tensordict, [self.tensor_keys.action, self.observation_key])
        action = tensordict.get(self.tensor_keys.action)
        observation = tensordict.get(self.observation_key)
        with self.diffusion_network_params.to_module(self.diffusion_network):
            loss = terms.behaviour_cloning_loss(self.diffusion_network.module, action, observation)
        loss = self.reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, {}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``alpha * L_TR(a_pi) - min_i Q_i(s, a_pi) + gamma_nll * NLL(a_data)`` with ``a_pi ~ pi(.|s)`` (rsample).

        The diffusion model and the critic are frozen here (their parameters are detached) but the sampled action
        is not, so the trust-region and Q terms reach the actor through ``a_pi``.
        """
        keys = list(dict.fromkeys([*self.actor_network.in_keys, self.observation_key, self.tensor_keys.action]))
        self.check_inputs(tensordict, keys)
        actor_td = tensordict.select(*self.actor_network.in_keys, strict=False)
        with set_exploration_type(ExplorationType.RANDOM), self.actor_network_params.to_module(self.actor_network):
            dist = self.actor_network.get_dist(actor_td)
        action_pi = dist.rsample()

        observation = tensordict.get(self.observation_key)
        with self._cached_detach_diffusion_params.to_module(self.diffusion_network):
            trust_region = terms.trust_region_loss(self.diffusion_network.module, action_pi, observation)

        q_td = tensordict.select(*self.qvalue_network.in_keys, strict=False).set(self.tensor_keys.action, action_pi)
        q_td = self._vmap_qvalue_networkN0(q_td, self._cached_detach_qvalue_params)
        min_q = terms.ensemble_min(q_td.get(self.tensor_keys.state_action_value).squeeze(-1))

        nll = terms.dataset_action_nll(dist, tensordict.get(self.tensor_keys.action), self.nll_atanh_eps)
        loss = terms.actor_objective(trust_region, min_q, nll, alpha=self.alpha, gamma_nll=self.gamma_nll)
        metadata = {
            "trust_region": trust_region.detach(),
            "min_q_actor": min_q.detach(),
            "nll_data": nll.detach(),
            "policy_std": terms.policy_scale(dist),
        }
        loss = self.reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, metadata

    # ------------------------------------------------------------------ the self-tuning weight (alpha="auto")
    def trust_region_target(self, loss_diffusion: Tensor) -> Tensor:
        """The level ``alpha="auto"`` holds the policy's trust-region loss at: ``trust_region_ratio`` times the
        behaviour model's denoising loss on the batch's dataset actions (``loss_diffusion``, detached).

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha="auto", trust_region_ratio=1.5)
            >>> loss.trust_region_target(torch.tensor(2.0))
            tensor(3.)
        """
        self._check_learns_log_alpha()
        return self.trust_region_ratio * loss_diffusion.detach()

    def alpha_loss(self, trust_region: Tensor, loss_diffusion: Tensor) -> Tensor:
        """The multiplier's loss (:func:`~torchrl_dtql.objectives.terms.trust_region_multiplier_loss`) from the
        batch's trust-region loss of the policy's actions and its BC loss; its gradient reaches ``log_alpha`` only.

        Both update paths step it after the actor (with the optimizer ``make_dtql_optimizers`` adds), then call
        :meth:`refresh_alpha_`.
        """
        self._check_learns_log_alpha()
        target = self.trust_region_target(loss_diffusion)
        return terms.trust_region_multiplier_loss(self.log_alpha, trust_region.detach().mean(), target)

    @torch.no_grad()
    def initialize_alpha_(self, min_q: Tensor, trust_region: Tensor) -> None:
        """Sets ``log_alpha`` from the batch (:func:`~torchrl_dtql.objectives.terms.trust_region_weight_scale`) the
        first time it is called when ``alpha_init=None``; afterwards (or with a given ``alpha_init``) it does nothing.
        Branch-free, so a CUDA graph can hold it."""
        self._check_learns_log_alpha()
        low, high = self.alpha_range
        scale = terms.trust_region_weight_scale(min_q, trust_region).clamp(low, high).log()
        self.log_alpha.copy_(torch.where(self.alpha_initialized, self.log_alpha, scale.to(self.log_alpha)))
        self.alpha_initialized.fill_(True)

    @torch.no_grad()
    def refresh_alpha_(self) -> None:
        """Clamps ``log_alpha`` to :attr:`alpha_range` and writes ``exp(log_alpha)`` into the ``alpha`` buffer that the
        actor objective reads (in place: compiled code and CUDA graphs see the new value)."""
        low, high = self.alpha_range
        self.log_alpha.clamp_(math.log(low), math.log(high))
        self.alpha.copy_(self.log_alpha.exp())

    @property
    def learns_log_alpha(self) -> bool:
        """Whether alpha is a Lagrange multiplier with its own optimizer (``alpha="auto"``,
        ``auto_alpha="multiplier"``)."""
        return self.auto_alpha == "multiplier"

    @torch.no_grad()
    def scale_alpha_(self, q_data: Tensor) -> None:
        """``auto_alpha="q_scale"``: writes ``alpha_per_q * |mean Q(s, a_data)|`` of the batch
        (:func:`~torchrl_dtql.objectives.terms.q_scaled_trust_region_weight`), clamped to :attr:`alpha_range`, into
        the ``alpha`` buffer (in place, branch-free: compiled code and CUDA graphs see it). Both update paths call
        it between the critic's forward and the actor's loss.

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha="auto", auto_alpha="q_scale")
            >>> loss.scale_alpha_(torch.tensor([-250.0, -150.0]))
            >>> float(loss.alpha)
            20.0
        """
        if self.auto_alpha != "q_scale":
            raise RuntimeError("scale_alpha_ is the auto_alpha='q_scale' rule; this loss does not use it.")
        low, high = self.alpha_range
        self.alpha.copy_(terms.q_scaled_trust_region_weight(q_data, self.alpha_per_q).clamp(low, high))

    def _check_learns_log_alpha(self) -> None:
        if not self.learns_log_alpha:
            raise RuntimeError(
                "This loss has no Lagrange multiplier; build it with alpha='auto', auto_alpha='multiplier' for one."
            )

    # ------------------------------------------------------------------ forward
    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All four losses on one batch (current parameters) plus detached diagnostics; writes ``td_error``.

        For the reference's sequential three-optimizer update use :func:`~torchrl_dtql.dtql_update_step`.
        """
        return self.pack_outputs(tensordict, *self.compute_losses(tensordict))

    def compute_losses(
        self, tensordict: TensorDictBase
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """The losses ``forward`` returns (critic, value, diffusion, actor, in that order of random draws), with the
        critic's and the actor's metadata. A subclass adding a loss extends this and inherits ``forward``."""
        loss_qvalue, metadata_q = self.qvalue_loss(tensordict)
        loss_value, _ = self.value_loss(tensordict)
        loss_diffusion, _ = self.diffusion_loss(tensordict)
        loss_actor, metadata_actor = self.actor_loss(tensordict)
        losses = {
            "loss_actor": loss_actor,
            "loss_qvalue": loss_qvalue,
            "loss_value": loss_value,
            "loss_diffusion": loss_diffusion,
        }
        if self.learns_alpha:
            metadata_actor["alpha"] = self.alpha.detach().expand_as(metadata_actor["trust_region"]).clone()
        if self.learns_log_alpha:
            losses["loss_alpha"] = self.alpha_loss(metadata_actor["trust_region"], loss_diffusion)
            metadata_actor["trust_region_target"] = self.trust_region_target(loss_diffusion)
        return losses, metadata_q, metadata_actor

    def pack_outputs(
        self,
        tensordict: TensorDictBase,
        losses: dict[str, Tensor],
        qvalue_metadata: dict[str, Tensor],
        actor_metadata: dict[str, Tensor],
    ) -> TensorDictBase:
        """The output of ``forward``: the losses, then the detached diagnostics (averaged, or per sample with
        ``reduction="none"``); writes the priority (the largest TD error over the ensemble) into ``tensordict``.

        Subclasses that add losses (e.g. the KL-distillation loss) pack theirs the same way.
        """
        tensordict.set(self.tensor_keys.priority, qvalue_metadata.pop("td_error").amax(0))
        out = dict(losses)
        diagnostics = {**actor_metadata, **qvalue_metadata}
        if self.reduction == "none":
            out.update(diagnostics)
            td_out = TensorDict(out, batch_size=tensordict.batch_size)
        else:
            out.update({key: value.mean() for key, value in diagnostics.items()})
            td_out = TensorDict(out)
        self._clear_weakrefs(tensordict, td_out, *self.param_names)
        return td_out

    # ------------------------------------------------------------------ value estimator
    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams) -> None:
        """Sets the bootstrapped target of the Q regression (TD0 with ``gamma=0.99`` by default, as the reference).

        DTQL uses TD0, ``y = r + gamma * (1 - terminated) * V(s')``: it needs nothing but the transition, so it is
        right on uniformly sampled batches. TD1 and TD(lambda) compute multi-step returns along a time dimension
        and are right only on trajectory slices ``[B, T]`` whose time dimension is named ``"time"`` (or with an
        explicit ``time_dim=``); :meth:`qvalue_target` refuses any other batch with an error, instead of reading a
        batch of independent transitions as one trajectory. GAE, MAGAE and VTrace are advantage estimators for
        on-policy losses: ``NotImplementedError``.

        Args:
            value_type: a :class:`~torchrl.objectives.utils.ValueEstimators` member, or an estimator class or
                instance; TD0 when omitted.
            **hyperparams: the estimator's keyword arguments (``gamma``, ``lmbda``, ``time_dim``, ``device``...).

        Examples:
            >>> from torchrl_dtql import make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16))
            >>> loss.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
            >>> float(loss.value_estimator.gamma)
            0.8999999761581421
        """
        if value_type is None:
            value_type = self.default_value_estimator
        if isinstance(value_type, ValueEstimatorBase) or (
            isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase)
        ):
            return LossModule.make_value_estimator(self, value_type, **hyperparams)
        dispatch_value_estimator(
            self,
            value_type,
            supported=self.SUPPORTED_VALUE_ESTIMATORS,
            tensor_keys={
                "value_target": "value_target",
                "value": self.tensor_keys.value,
                "reward": self.tensor_keys.reward,
                "done": self.tensor_keys.done,
                "terminated": self.tensor_keys.terminated,
            },
            **hyperparams,
        )
