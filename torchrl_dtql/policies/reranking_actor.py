"""DTQL's evaluation policy as a TensorDict module: Q-reranked candidates of a (one-step) actor.

:class:`QRerankingActor` draws candidate actions from an actor, scores them with the minimum over a Q ensemble and
keeps one per state with :func:`~torchrl_dtql.policies.reranking.rerank`; :meth:`QRerankingActor.from_loss` makes
one that reads a trained :class:`~torchrl_dtql.DTQLLoss`'s parameters by reference.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

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
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule
from torchrl.objectives.utils import _vmap_func

from torchrl_dtql.modules.bound_networks import bind_parameters, ensemble_values
from torchrl_dtql.modules.fast_mish import replace_mish_
from torchrl_dtql.modules.inductor import make_inductor_backend
from torchrl_dtql.policies.reranking import repeat_for_candidates, rerank

__all__ = ["QRerankingActor"]


class QRerankingActor(TensorDictModuleBase):
    """Acts by drawing candidate actions from a policy and choosing among them by their Q values.

    For each state it draws ``num_candidates`` actions from ``actor`` (always stochastic), scores them with the
    minimum over the Q ensemble and picks one by sampling ``softmax(min_q / temperature)``; ``temperature=0``
    takes the argmax (:func:`~torchrl_dtql.policies.reranking.rerank`). This is the DTQL reference's evaluation
    policy (1024 candidates, temperature 1, target critic). It reads the actor's in_keys and writes the action key,
    for any batch shape, so it works inside ``env.rollout``.

    The networks may be called with external (functional) parameters, which is how :meth:`from_loss` makes an actor
    that follows a :class:`~torchrl_dtql.DTQLLoss` during training: the loss holds the trained parameters (its Q
    ensemble is a stacked copy of the modules the user passed), and this actor reads them by reference.

    Latency: when ``actor`` is a probabilistic actor (a :class:`~tensordict.nn.ProbabilisticTensorDictSequential`,
    as :func:`~torchrl_dtql.make_one_step_actor` builds), its network runs once per state and the candidates are
    drawn from that distribution expanded along a candidate dimension. That draws the same numbers, in the same
    order, as running the network on ``num_candidates`` copies of each state (the reference), for
    ``1/num_candidates`` of the actor's cost. The Q ensemble given as stacked parameters is scored on plain
    tensors, with Mish computed from one ``exp`` (:class:`~torchrl_dtql.modules.fast_mish.ExpMish`, the same function
    to within float rounding), and ``compile=True`` compiles that scoring (where nearly all the time goes for large
    ``num_candidates``).

    Args:
        actor: a module that writes ``action_key`` (e.g. :func:`~torchrl_dtql.make_one_step_actor`); it is run under
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
        >>> from torchrl_dtql import make_one_step_actor, make_qvalue_network
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
                raise ValueError(
                    "Pass either a list of Q modules or one Q module with stacked qvalue_params, not both."
                )
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
        loss: LossModule,
        num_candidates: int = 1024,
        temperature: float = 1.0,
        *,
        use_target_qvalue: bool = True,
        compile: bool = False,
    ) -> QRerankingActor:
        """The reranking actor of a :class:`~torchrl_dtql.DTQLLoss`, reading the loss's parameters by reference.

        Only the loss's public attributes are read (``actor_network``, ``qvalue_network``, their ``*_params``,
        ``target_qvalue_network_params`` and ``tensor_keys``), so any loss that has them works. The one-step actor is called with ``loss.actor_network_params`` and the Q ensemble with
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
            inputs = [  # state features [*B, F] -> [*B * N, F], state-major like the candidates
                flat_actions
                if key == self.action_key
                else repeat_for_candidates(tensordict.get(key), num_candidates, batch_dims=len(batch_size))
                for key in self.qvalue_network.in_keys
            ]
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
        observations = tensordict.select(*self.in_keys)
        actions = self._sample_candidates(observations, self.num_candidates)
        min_q = self._min_qvalue(tensordict, actions)
        tensordict.set(self.action_key, rerank(actions, min_q, self.temperature))
        return tensordict
