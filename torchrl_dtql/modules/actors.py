"""DTQL's acting modules: the one-step tanh-Gaussian policy and the Q-reranking actor used for evaluation."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ProbabilisticActor, TanhNormal
from torchrl.objectives.utils import _vmap_func

from torchrl_dtql.modules.fast_ops import bind_parameters, ensemble_values, make_inductor_backend, replace_mish_

if TYPE_CHECKING:
    from torchrl_dtql.objectives.dtql import DTQLLoss

__all__ = ["GaussianPolicyNetwork", "make_one_step_actor", "QRerankingActor"]

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class GaussianPolicyNetwork(nn.Module):
    """``observation -> (loc, scale)`` of a diagonal Gaussian: a ReLU MLP with a hard-clamped, state-dependent log-std.

    As the reference ``DiagGaussianActorTanhAction``: ``num_hidden_layers`` ReLU layers, an output of size
    ``2 * action_dim`` split into ``loc`` and ``log_std``, ``log_std`` clamped to ``[log_std_min, log_std_max]``
    (not tanh-rescaled), orthogonal weights (gain 1) and zero biases.

    Examples:
        >>> net = GaussianPolicyNetwork(17, 6)
        >>> loc, scale = net(torch.randn(4, 17))
        >>> loc.shape, bool((scale >= torch.exp(torch.tensor(-5.0))).all())
        (torch.Size([4, 6]), True)
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        hidden_dim: int = 256,
        num_hidden_layers: int = 3,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
    ) -> None:
        super().__init__()
        if log_std_min >= log_std_max:
            raise ValueError(f"log_std_min must be < log_std_max, got {log_std_min} and {log_std_max}.")
        layers: list[nn.Module] = []
        in_features = observation_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(in_features, hidden_dim), nn.ReLU()]
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, 2 * action_dim))
        self.net = nn.Sequential(*layers)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, gain=1.0)
                nn.init.zeros_(module.bias)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_std = self.net(observation).chunk(2, dim=-1)
        return loc, log_std.clamp(self.log_std_min, self.log_std_max).exp()


def _action_bounds(action_spec: TensorSpec) -> tuple[Tensor | float, Tensor | float]:
    """Floats when the bounds are uniform (so the distribution follows the module across devices), else tensors."""
    low, high = action_spec.space.low, action_spec.space.high
    if bool((low == low.flatten()[0]).all()) and bool((high == high.flatten()[0]).all()):
        return float(low.flatten()[0]), float(high.flatten()[0])
    return low, high


def make_one_step_actor(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    hidden_dim: int = 256,
    num_hidden_layers: int = 3,
    log_std_min: float = LOG_STD_MIN,
    log_std_max: float = LOG_STD_MAX,
    in_keys: Sequence[NestedKey] = ("observation",),
    out_keys: Sequence[NestedKey] = ("action",),
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """DTQL's one-step policy: a :class:`~torchrl.modules.ProbabilisticActor` with a :class:`~torchrl.modules.TanhNormal`.

    Samples are ``tanh(loc + scale * eps)`` rescaled to the spec's bounds (reparameterised, so gradients reach the
    network); under ``ExplorationType.DETERMINISTIC`` the actor returns the mean action ``tanh(loc)``.

    Args:
        observation_dim: size of the observation vector.
        action_spec: a :class:`~torchrl.data.Bounded` action spec (or a Composite holding it under the out key).

    Keyword Args:
        hidden_dim: width of the hidden layers (reference: 256).
        num_hidden_layers: number of ReLU layers (reference: 3).
        log_std_min: lower clamp of the log-std (reference: -5).
        log_std_max: upper clamp of the log-std (reference: 2).
        in_keys: the observation key.
        out_keys: the action key.
        device: where to create the parameters.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> actor = make_one_step_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=32)
        >>> actor(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """
    out_key = list(out_keys)[0]
    bounded = action_spec[out_key] if isinstance(action_spec, Composite) else action_spec
    if not isinstance(bounded, Bounded):
        raise TypeError(f"make_one_step_actor needs a Bounded action spec, got {type(bounded).__name__}.")
    action_dim = bounded.shape[-1]
    network = GaussianPolicyNetwork(
        observation_dim,
        action_dim,
        hidden_dim=hidden_dim,
        num_hidden_layers=num_hidden_layers,
        log_std_min=log_std_min,
        log_std_max=log_std_max,
    )
    low, high = _action_bounds(bounded)
    module = TensorDictModule(network, in_keys=list(in_keys), out_keys=["loc", "scale"])
    actor = ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[out_key],
        spec=Composite({out_key: bounded}),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": False},
        default_interaction_type=ExplorationType.RANDOM,
    )
    return actor.to(device) if device is not None else actor


class QRerankingActor(TensorDictModuleBase):
    """Acts by drawing candidate actions from a policy and choosing among them by their Q values.

    For each state it draws ``num_candidates`` actions from ``actor`` (always stochastic), scores them with the
    minimum over the Q ensemble and picks one by sampling ``softmax(min_q / temperature)``; ``temperature=0``
    takes the argmax. This is the DTQL reference's evaluation policy (1024 candidates, temperature 1, target
    critic). It reads the actor's in_keys and writes the action key, for any batch shape, so it works inside
    ``env.rollout``.

    The networks may be called with external (functional) parameters, which is how :meth:`from_loss` makes an actor
    that follows a :class:`~torchrl_dtql.DTQLLoss` during training: the loss holds the trained parameters (its Q
    ensemble is a stacked copy of the modules the user passed), and this actor reads them by reference.

    Latency: when ``actor`` is a probabilistic actor (a :class:`~tensordict.nn.ProbabilisticTensorDictSequential`,
    as :func:`make_one_step_actor` builds), its network runs once per state and the candidates are drawn from that
    distribution expanded along a candidate dimension. That draws the same numbers, in the same order, as running
    the network on ``num_candidates`` copies of each state (the reference), for ``1/num_candidates`` of the actor's
    cost. The Q ensemble given as stacked parameters is scored on plain tensors, with Mish computed from one ``exp``
    (:class:`~torchrl_dtql.modules.fast_ops.ExpMish`, the same function to within float rounding), and
    ``compile=True`` compiles that scoring (where nearly all the time goes for large ``num_candidates``).

    Args:
        actor: a module that writes ``action_key`` (e.g. :func:`make_one_step_actor`); it is run under
            ``ExplorationType.RANDOM``.
        qvalue_network: a Q module (``ValueOperator`` over observation and action), or a list of them (an ensemble).
        num_candidates: candidate actions per state (reference: 1024).
        temperature: softmax temperature on raw Q values; 0 means argmax.

    Keyword Args:
        actor_params: parameters to call ``actor`` with (``None``: its own).
        qvalue_params: parameters of ``qvalue_network`` stacked along a leading ensemble dimension (``None``: the
            module's own, or one per module of the list).
        action_key: the key the actor writes and this module outputs.
        state_action_value_key: the key the Q module writes.
        compile: ``torch.compile`` the scoring of the candidates by the stacked Q ensemble. The first call compiles
            (tens of seconds on a CPU); each new batch shape compiles once more.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_dtql.modules.critics import make_qvalue_network
        >>> actor = make_one_step_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=32)
        >>> qnets = [make_qvalue_network(3, 2, hidden_dim=32) for _ in range(2)]
        >>> policy = QRerankingActor(actor, qnets, num_candidates=16)
        >>> policy(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))["action"].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        actor: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase | Sequence[TensorDictModuleBase],
        num_candidates: int = 1024,
        temperature: float = 1.0,
        *,
        actor_params: TensorDictBase | None = None,
        qvalue_params: TensorDictBase | None = None,
        action_key: NestedKey = "action",
        state_action_value_key: NestedKey = "state_action_value",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}.")
        self.actor = actor
        if isinstance(qvalue_network, (list, tuple)):
            if qvalue_params is not None:
                raise ValueError("Pass either a list of Q modules or one Q module with stacked qvalue_params, not both.")
            self.qvalue_networks = nn.ModuleList(qvalue_network)
            self.qvalue_network = None
        else:
            self.qvalue_networks = None
            self.qvalue_network = qvalue_network
        self.actor_params = actor_params
        self.qvalue_params = qvalue_params
        self.num_candidates = num_candidates
        self.temperature = temperature
        self.action_key = action_key
        self.state_action_value_key = state_action_value_key
        self.in_keys = list(actor.in_keys)
        self.out_keys = [action_key]
        self._set_up_fast_paths(compile)

    def _set_up_fast_paths(self, compile: bool) -> None:
        """Private copies of the networks that hold the given parameters, so that no call swaps parameters in.

        They hold the very parameter tensors (or views of the stacked ensemble's), hence follow in-place training
        updates; they are kept out of the module tree (no state of their own in ``state_dict``, no double
        registration of the loss's parameters).
        """
        acting_actor = self.actor
        if self.actor_params is not None:
            acting_actor = bind_parameters(self.actor, self.actor_params, frozen=False)
        members = scorer = None
        stacked: dict[str, Tensor] | None = None
        if self._scores_on_tensors():
            # eagerly, one module per ensemble member (views of the stacked parameters), looped; compiled, one
            # vmapped functional call of a parameter-free copy. Both with the fast Mish.
            members = [
                replace_mish_(bind_parameters(self.qvalue_network, self.qvalue_params[i], frozen=True).module)
                for i in range(self.qvalue_params.shape[0])
            ]
            scorer = replace_mish_(copy.deepcopy(self.qvalue_network.module).to("meta"))
            stacked = {".".join(key[1:]): value for key, value in self.qvalue_params.items(True, True)}
        elif compile:
            raise ValueError(
                "compile=True compiles the stacked Q ensemble: pass one TensorDictModule Q network with stacked "
                "qvalue_params (as from_loss does)."
            )
        fast = {"_acting_actor": acting_actor, "_qvalue_members": members, "_qvalue_scorer": scorer,
                "_stacked_qvalue_params": stacked}  # fmt: skip
        for name, value in fast.items():
            object.__setattr__(self, name, value)
        score = self._score_members
        if compile:
            score = torch.compile(
                self._score_stacked,
                backend=make_inductor_backend(),
                dynamic=False,
                # parameters arrive as inputs and the scorer never changes: only tensor guards are worth their cost
                options={"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe},
            )
        object.__setattr__(self, "_score", score)

    @classmethod
    def from_loss(
        cls,
        loss: DTQLLoss,
        num_candidates: int = 1024,
        temperature: float = 1.0,
        *,
        use_target_qvalue: bool = True,
        compile: bool = False,
    ) -> QRerankingActor:
        """The reranking actor of a :class:`~torchrl_dtql.DTQLLoss`, reading the loss's parameters by reference.

        The one-step actor is called with ``loss.actor_network_params`` and the Q ensemble with
        ``loss.target_qvalue_network_params`` (the Polyak-averaged critic the reference evaluates with), or the
        online ``loss.qvalue_network_params`` with ``use_target_qvalue=False``. As training updates those
        parameters in place, the actor's choices follow. ``compile`` is passed to the constructor.

        Examples:
            >>> from tensordict import TensorDict
            >>> from torchrl.data import Bounded
            >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
            >>> loss = DTQLLoss(**make_dtql_modules(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=32), alpha=1.0)
            >>> policy = QRerankingActor.from_loss(loss, num_candidates=8)
            >>> policy(TensorDict(observation=torch.randn(2, 3), batch_size=[2]))["action"].shape
            torch.Size([2, 2])
        """
        qvalue_params = loss.target_qvalue_network_params if use_target_qvalue else loss.qvalue_network_params
        return cls(
            loss.actor_network,
            loss.qvalue_network,
            num_candidates,
            temperature,
            actor_params=loss.actor_network_params,
            qvalue_params=qvalue_params,
            action_key=loss.tensor_keys.action,
            state_action_value_key=loss.tensor_keys.state_action_value,
            compile=compile,
        )

    # ------------------------------------------------------------------ candidates
    def _sample_candidates(self, observations: TensorDictBase, num_candidates: int) -> Tensor:
        """``[*B, N, action_dim]`` stochastic actions, ``N`` per state."""
        batch_size = observations.batch_size
        actor = self._acting_actor
        with set_exploration_type(ExplorationType.RANDOM):
            if isinstance(actor, ProbabilisticTensorDictSequential):
                # the network once per state; N draws from the distribution expanded along a candidate dim
                dist_params = self._distribution_parameters(actor, observations)
                dist = actor.build_dist_from_params(dist_params.unsqueeze(-1).expand(*batch_size, num_candidates))
                return dist.rsample() if dist.has_rsample else dist.sample()
            candidates = observations.unsqueeze(-1).expand(*batch_size, num_candidates).reshape(-1)
            actions = actor(candidates).get(self.action_key)
        return actions.reshape(*batch_size, num_candidates, actions.shape[-1])

    @staticmethod
    def _distribution_parameters(actor: ProbabilisticTensorDictSequential, observations: TensorDictBase):
        """``actor.get_dist_params(observations)``, calling plain ``TensorDictModule`` steps on their tensors.

        The result is the same; it skips TensorDictModule's output conversion (``TensorDict.from_any``, which in
        tensordict 0.14 searches the import path for pandas on every output when pandas is not installed: about
        0.1 ms per key, several times the policy network's own cost at batch 1).
        """
        steps = list(actor.det_part.module) if isinstance(actor.det_part, TensorDictSequential) else [actor.det_part]
        for step in steps:
            if not (
                type(step) is TensorDictModule
                and step._kwargs is None
                and step.method is None
                and list(step.out_keys) == list(step.out_keys_source)
            ):
                return actor.get_dist_params(observations)
        for step in steps:
            outputs = step.module(*[observations.get(key) for key in step.in_keys])
            outputs = (outputs,) if isinstance(outputs, Tensor) else outputs
            if len(outputs) != len(step.out_keys):
                raise RuntimeError(f"{type(step.module).__name__} returned {len(outputs)} outputs for {step.out_keys}.")
            for key, value in zip(step.out_keys, outputs):
                observations.set(key, value)
        return observations

    # ------------------------------------------------------------------ scores
    def _scores_on_tensors(self) -> bool:
        """Whether the Q ensemble can be called on plain tensors: one TensorDictModule with stacked parameters."""
        return (
            self.qvalue_params is not None
            and isinstance(self.qvalue_network, TensorDictModule)
            and len(self.qvalue_network.out_keys) == 1
            and all(key[0] == "module" for key in self.qvalue_params.keys(True, True))
        )

    def _qvalue_state_keys(self) -> list[NestedKey]:
        """The keys the Q networks read besides the action (the state)."""
        networks = [self.qvalue_network] if self.qvalue_networks is None else list(self.qvalue_networks)
        keys = [key for net in networks for key in net.in_keys if key != self.action_key]
        return list(dict.fromkeys(keys))

    def _score_members(self, *inputs: Tensor) -> Tensor:
        """``min_i Q_i(inputs)``, one bound member module after the other (eager)."""
        return torch.stack([member(*inputs) for member in self._qvalue_members]).amin(0).squeeze(-1)

    def _score_stacked(self, *inputs: Tensor) -> Tensor:
        """``min_i Q_i(inputs)`` as one vmapped call over the stacked parameters (what gets compiled)."""
        params = self._stacked_qvalue_params
        return ensemble_values(self._qvalue_scorer, params, inputs, loop=False).amin(0).squeeze(-1)

    def _min_qvalue(self, tensordict: TensorDictBase, actions: Tensor) -> Tensor:
        """``[*B, N]`` minimum over the Q ensemble for ``[*B, N, action_dim]`` candidate actions."""
        batch_size = tensordict.batch_size
        num_candidates = actions.shape[-2]
        flat_actions = actions.reshape(-1, actions.shape[-1])
        if self._qvalue_members is not None:
            inputs = []
            for key in self.qvalue_network.in_keys:
                if key == self.action_key:
                    inputs.append(flat_actions)
                    continue
                value = tensordict.get(key)  # [*B, F] -> [*B * N, F], state-major like the candidates
                feature_shape = value.shape[len(batch_size) :]
                value = value.unsqueeze(len(batch_size)).expand(*batch_size, num_candidates, *feature_shape)
                inputs.append(value.reshape(-1, *feature_shape))
            return self._score(*inputs).reshape(*batch_size, num_candidates)
        candidates = tensordict.select(*self._qvalue_state_keys()).unsqueeze(-1)
        candidates = candidates.expand(*batch_size, num_candidates).reshape(-1)
        candidates.set(self.action_key, flat_actions)
        if self.qvalue_params is not None:
            vmapped = _vmap_func(self.qvalue_network, (None, 0), randomness="different")
            q_td = vmapped(candidates.select(*self.qvalue_network.in_keys), self.qvalue_params)
            min_q = q_td.get(self.state_action_value_key).amin(0).squeeze(-1)
        else:
            networks = self.qvalue_networks if self.qvalue_networks is not None else [self.qvalue_network]
            values = [net(candidates.select(*net.in_keys).copy()).get(self.state_action_value_key) for net in networks]
            min_q = torch.stack(values, 0).amin(0).squeeze(-1)
        return min_q.reshape(*batch_size, num_candidates)

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch_size = tensordict.batch_size
        n = self.num_candidates
        observations = tensordict.select(*self.in_keys)
        actions = self._sample_candidates(observations, n)
        min_q = self._min_qvalue(tensordict, actions)
        if self.temperature == 0:
            index = min_q.argmax(-1)
        else:
            probs = torch.softmax(min_q / self.temperature, dim=-1)
            index = torch.multinomial(probs.reshape(-1, n), 1).reshape(batch_size)
        chosen = actions.gather(-2, index[..., None, None].expand(*batch_size, 1, actions.shape[-1])).squeeze(-2)
        tensordict.set(self.action_key, chosen)
        return tensordict
