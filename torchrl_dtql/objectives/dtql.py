"""``DTQLLoss``: Diffusion Trusted Q-Learning (Chen, Wang and Zhou, NeurIPS 2024) as a TorchRL loss module."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch, TensorDictModule
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import (
    _cache_values,
    _vmap_func,
    dispatch_value_estimator,
    distance_loss,
    ValueEstimators,
)
from torchrl.objectives.value import ValueEstimatorBase

from torchrl_dtql.modules.critics import CriticMLP
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor

__all__ = ["DTQLLoss"]

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


def expectile_loss(diff: Tensor, expectile: Tensor | float) -> Tensor:
    """The asymmetric squared loss ``|expectile - 1(diff < 0)| * diff^2`` of IQL's value regression."""
    weight = torch.where(diff < 0, 1 - expectile, expectile)
    return weight * diff.pow(2)


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

    Args:
        actor_network: the one-step policy, a ``ProbabilisticActor`` with a ``TanhNormal``
            (:func:`~torchrl_dtql.make_one_step_actor`).
        diffusion_network: the :class:`~torchrl_dtql.EDMDiffusionActor` behaviour model.
        qvalue_network: a Q ``ValueOperator`` (copied ``num_qvalue_nets`` times with re-sampled weights) or a list
            of them (stacked as they are; the reference's twin Q).
        value_network: the state-value ``ValueOperator``.

    Keyword Args:
        alpha: weight of the trust-region term (per-task in the reference: 0.5 to 1500).
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
    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda)
    _schedulable_buffers = frozenset({"alpha", "gamma_nll", "expectile"})
    _UPDATER_CACHE = "_dtql_updaters"  # dtql_update_step's fast updaters (objectives/update.py), never saved

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
        alpha: float = 1.0,
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
        if alpha < 0 or gamma_nll < 0:
            raise ValueError(f"alpha and gamma_nll must be >= 0, got alpha={alpha}, gamma_nll={gamma_nll}.")
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
        self.register_coeff_buffer("alpha", float(alpha))
        self.register_coeff_buffer("gamma_nll", float(gamma_nll))
        self.register_coeff_buffer("expectile", float(expectile))

        self._check_network_dims(actor_network, diffusion_network, qvalue_network)
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
    @staticmethod
    def _action_dim_of(module: nn.Module) -> int | None:
        spec = getattr(module, "spec", None)
        if spec is None:
            return None
        try:
            leaf = spec["action"] if "action" in spec.keys() else next(iter(spec.values(True, True)))
        except (AttributeError, KeyError, StopIteration):
            leaf = spec
        return int(leaf.shape[-1]) if len(leaf.shape) else None

    @classmethod
    def _check_network_dims(
        cls,
        actor_network: nn.Module,
        diffusion_network: nn.Module,
        qvalue_network: nn.Module | list[nn.Module],
    ) -> None:
        actor_dim = cls._action_dim_of(actor_network)
        diffusion_dim = cls._action_dim_of(diffusion_network)
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
    def _observation_key(self) -> NestedKey:
        return self.diffusion_network.in_keys[0]

    # ------------------------------------------------------------------ input checks
    @property
    def _action_dim(self) -> int | None:
        return self._action_dim_of(self.actor_network)

    def __getstate__(self) -> dict:
        """Pickling and ``deepcopy`` leave out the cached fast updaters (they hold compiled closures and optimizers)."""
        state = super().__getstate__()
        state.pop(self._UPDATER_CACHE, None)
        return state

    def _check_inputs(self, tensordict: TensorDictBase, keys: list[NestedKey]) -> None:
        """Fails early, naming the key, on missing entries, wrong action sizes or non-finite values."""
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
            if self.check_finite and value.is_floating_point():
                finite = torch.isfinite(value)
                if not bool(finite.all()):
                    bad = (~finite).reshape(value.shape[0], -1).any(-1).nonzero()
                    raise ValueError(
                        f"DTQLLoss: entry {key!r} holds {int((~finite).sum())} non-finite values (NaN/inf); the first "
                        f"is in sample {int(bad[0])}. Clean the dataset (e.g. drop_nonfinite=True when loading)."
                    )
        action_key = self.tensor_keys.action
        action_dim = self._action_dim
        if action_key in keys and action_dim is not None:
            action = tensordict.get(action_key)
            if action.shape[-1] != action_dim:
                raise ValueError(
                    f"DTQLLoss: the batch's {action_key!r} has {action.shape[-1]} dims (shape {tuple(action.shape)}) "
                    f"but the networks were built for {action_dim}-dim actions."
                )
        reward_key = ("next", self.tensor_keys.reward)
        if reward_key in keys:
            reward = tensordict.get(reward_key)
            if reward.shape != (*tensordict.batch_size, 1):
                raise ValueError(
                    f"DTQLLoss: {reward_key!r} must have shape {(*tensordict.batch_size, 1)} (a trailing singleton "
                    f"dim), got {tuple(reward.shape)}."
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

    # ------------------------------------------------------------------ the four losses
    def _reduce(self, loss: Tensor, tensordict: TensorDictBase) -> Tensor:
        return self._reduce_loss(loss, tensordict=tensordict, weights=self._maybe_get_priority_weight(tensordict))

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``sum_i (Q_i(s, a) - y)^2`` with ``y = r + discount * (1 - terminated) * V(s')`` (V frozen).

        Returns the reduced loss and ``{"td_error": [E, *B], "pred_value": [*B], "target_value": [*B]}``.
        """
        self._check_inputs(tensordict, self._critic_keys())
        data = tensordict.select(*self._critic_keys(), strict=False)
        target_value = self.value_estimator.value_estimate(
            data, target_params=self.target_value_network_params
        ).squeeze(-1)
        q_td = self._vmap_qvalue_networkN0(
            data.select(*self.qvalue_network.in_keys, strict=False), self.qvalue_network_params
        )
        pred = q_td.get(self.tensor_keys.state_action_value).squeeze(-1)
        loss = distance_loss(pred, target_value.expand_as(pred), loss_function=self.loss_function).sum(0)
        metadata = {
            "td_error": (pred - target_value).pow(2).detach(),
            "pred_value": pred.detach().mean(0),
            "target_value": target_value.detach(),
        }
        loss = self._reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *_PARAM_NAMES)
        return loss, metadata

    def value_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The expectile regression of ``V(s)`` on ``min_i Q_i(s, a)`` (online Q, detached; dataset actions)."""
        keys = list(dict.fromkeys([self.tensor_keys.action, *self.qvalue_network.in_keys, *self.value_network.in_keys]))
        self._check_inputs(tensordict, keys)
        q_td = self._vmap_qvalue_networkN0(
            tensordict.select(*self.qvalue_network.in_keys, strict=False), self._cached_detach_qvalue_params
        )
        min_q = q_td.get(self.tensor_keys.state_action_value).amin(0).squeeze(-1)
        v_td = tensordict.select(*self.value_network.in_keys, strict=False)
        with self.value_network_params.to_module(self.value_network):
            v_td = self.value_network(v_td)
        value = v_td.get(self.tensor_keys.value).squeeze(-1)
        loss = self._reduce(expectile_loss(min_q - value, self.expectile), tensordict)
        self._clear_weakrefs(tensordict, *_PARAM_NAMES)
        return loss, {"state_value": value.detach()}

    def diffusion_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The EDM behaviour-cloning loss on dataset actions (moves the diffusion weights only)."""
        self._check_inputs(tensordict, [self.tensor_keys.action, self._observation_key])
        action = tensordict.get(self.tensor_keys.action)
        observation = tensordict.get(self._observation_key)
        with self.diffusion_network_params.to_module(self.diffusion_network):
            loss = self.diffusion_network.module.denoising_loss(action, observation)
        loss = self._reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *_PARAM_NAMES)
        return loss, {}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``alpha * L_TR(a_pi) - min_i Q_i(s, a_pi) + gamma_nll * NLL(a_data)`` with ``a_pi ~ pi(.|s)`` (rsample).

        The diffusion model and the critic are frozen here (their parameters are detached) but the sampled action
        is not, so the trust-region and Q terms reach the actor through ``a_pi``.
        """
        keys = list(dict.fromkeys([*self.actor_network.in_keys, self._observation_key, self.tensor_keys.action]))
        self._check_inputs(tensordict, keys)
        actor_td = tensordict.select(*self.actor_network.in_keys, strict=False)
        with set_exploration_type(ExplorationType.RANDOM), self.actor_network_params.to_module(self.actor_network):
            dist = self.actor_network.get_dist(actor_td)
        action_pi = dist.rsample()

        observation = tensordict.get(self._observation_key)
        with self._cached_detach_diffusion_params.to_module(self.diffusion_network):
            trust_region = self.diffusion_network.module.denoising_loss(action_pi, observation)

        q_td = tensordict.select(*self.qvalue_network.in_keys, strict=False).set(self.tensor_keys.action, action_pi)
        q_td = self._vmap_qvalue_networkN0(q_td, self._cached_detach_qvalue_params)
        min_q = q_td.get(self.tensor_keys.state_action_value).amin(0).squeeze(-1)

        nll = self._dataset_action_nll(dist, tensordict.get(self.tensor_keys.action))
        loss = self.alpha * trust_region - min_q + self.gamma_nll * nll
        metadata = {
            "trust_region": trust_region.detach(),
            "min_q_actor": min_q.detach(),
            "nll_data": nll.detach(),
            "policy_std": dist.root_dist.stddev.detach().mean(-1) if hasattr(dist, "root_dist") else nll.new_zeros(()),
        }
        loss = self._reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *_PARAM_NAMES)
        return loss, metadata

    def _dataset_action_nll(self, dist: torch.distributions.Distribution, action: Tensor) -> Tensor:
        """``-sum_d log N(atanh(u_d / (1 + eps)); loc_d, scale_d)`` for data actions ``u`` rescaled to [-1, 1].

        This is the reference's ``log_prob`` (no tanh Jacobian, which does not depend on the policy's parameters).
        """
        low, high = dist.low, dist.high
        unit = ((action - (high + low) / 2) / ((high - low) / 2)).clamp(-1.0, 1.0)
        pre_tanh = torch.atanh(unit / (1.0 + self.nll_atanh_eps))
        return -dist.base_dist.log_prob(pre_tanh)

    # ------------------------------------------------------------------ forward
    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All four losses on one batch (current parameters) plus detached diagnostics; writes ``td_error``.

        For the reference's sequential three-optimizer update use :func:`~torchrl_dtql.dtql_update_step`.
        """
        loss_qvalue, metadata_q = self.qvalue_loss(tensordict)
        loss_value, _ = self.value_loss(tensordict)
        loss_diffusion, _ = self.diffusion_loss(tensordict)
        loss_actor, metadata_actor = self.actor_loss(tensordict)
        tensordict.set(self.tensor_keys.priority, metadata_q.pop("td_error").amax(0))
        out = {
            "loss_actor": loss_actor,
            "loss_qvalue": loss_qvalue,
            "loss_value": loss_value,
            "loss_diffusion": loss_diffusion,
        }
        diagnostics = {**metadata_actor, **metadata_q}
        if self.reduction == "none":
            out.update(diagnostics)
            td_out = TensorDict(out, batch_size=tensordict.batch_size)
        else:
            out.update({key: value.mean() for key, value in diagnostics.items()})
            td_out = TensorDict(out)
        self._clear_weakrefs(tensordict, td_out, *_PARAM_NAMES)
        return td_out

    # ------------------------------------------------------------------ value estimator
    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams) -> None:
        """Sets the bootstrapped target of the Q regression (TD0 with ``gamma=0.99`` by default, as the reference)."""
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
