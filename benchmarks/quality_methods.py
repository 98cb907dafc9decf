"""The methods of the quality benchmark (``quality.py``), each built from its own library's pieces.

* ``dtql``: :class:`~torchrl_dtql.DTQLLoss` with the task preset of ``examples/config/task/<family>-<kind>-v2.yaml``
  (alpha, lr, lr_decay, expectile, gamma_nll), the networks of :func:`~torchrl_dtql.make_dtql_modules`, the
  optimizers of :func:`~torchrl_dtql.make_dtql_optimizers` and the fast update step
  (:func:`~torchrl_dtql.dtql_update_step`, or :func:`~torchrl_dtql.make_dtql_update_fn` compiled). It acts in the
  ``reranked`` and ``mean`` modes, and its own diffusion model, trained by the behaviour-cloning loss only for every
  step of the run, acts in the ``diffusion_bc`` mode: that is the benchmark's diffusion BC baseline.
* ``dtql-auto``: the same with ``alpha="auto", auto_alpha="multiplier"`` (the trust-region weight learnt as a
  Lagrange multiplier; the default rule when these runs began).
* ``dtql-qscale``: the same with ``alpha="auto", auto_alpha="q_scale"`` (alpha = ``ALPHA_PER_Q`` x the batch's
  ``|mean Q|``).
* ``iql``: TorchRL's :class:`~torchrl.objectives.IQLLoss`, configured as TorchRL's offline IQL recipe configures it
  (:data:`IQL_RECIPE`).
* ``td3bc``: TorchRL's :class:`~torchrl.objectives.TD3BCLoss`, configured as TorchRL's TD3+BC recipe
  (:data:`TD3BC_RECIPE`).

Every method is a :class:`MethodRun`: the loss (its ``state_dict`` holds every network and target), the optimizers
and schedulers (for checkpoints), ``update(batch, step)`` (one gradient step; ``step`` counts from 0 over the whole
run) and the acting policies by mode name, all read through :func:`torchrl_dtql.policies.make_acting_policy`, which
serves any loss with an ``actor_network`` and its ``actor_network_params``.

Examples:
    >>> preset_name("local/halfcheetah/medium-v1"), preset_name("embedded/hopper/medium-v0")
    ('halfcheetah-medium-v2', 'hopper-medium-v2')
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from omegaconf import OmegaConf
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchrl.envs.utils import ExplorationType
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhModule, TanhNormal, ValueOperator
from torchrl.objectives import group_optimizers, IQLLoss, LossModule, SoftUpdate, TD3BCLoss

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers, make_dtql_update_fn
from torchrl_dtql.data import OfflineDatasetInfo
from torchrl_dtql.objectives.dtql import ALPHA_PER_Q
from torchrl_dtql.policies import make_acting_policies

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = REPO_ROOT / "examples" / "config" / "task"

#: The methods ``quality.py --methods`` accepts, in table order.
METHODS = ("dtql", "dtql-auto", "dtql-qscale", "iql", "td3bc")

#: How each DTQL method sets alpha: ``None`` the task preset's value, else ``alpha="auto"`` with this ``auto_alpha``.
DTQL_ALPHA_RULES: dict[str, str | None] = {"dtql": None, "dtql-auto": "multiplier", "dtql-qscale": "q_scale"}

#: The acting modes each method is evaluated in; the first is the method's headline score. ``mean`` is the
#: deterministic action of each method's policy (``tanh(loc)`` for DTQL and IQL, the actor's output for TD3+BC).
METHOD_MODES: dict[str, tuple[str, ...]] = {
    "dtql": ("reranked", "mean", "diffusion_bc"),
    "dtql-auto": ("reranked", "mean"),
    "dtql-qscale": ("reranked", "mean"),
    "iql": ("mean",),
    "td3bc": ("mean",),
}

#: The recipes compared against: pytorch/rl at commit ae9719f17 (version 0.14), the TorchRL release installed here.
TORCHRL_RECIPES = "pytorch/rl@ae9719f17 sota-implementations"

#: TorchRL's offline IQL recipe: sota-implementations/iql/offline_config.yaml, read by iql/utils.py.
IQL_RECIPE: dict[str, Any] = {
    "hidden_sizes": [256, 256],  # model.hidden_sizes: actor, Q and V MLPs (utils.make_iql_modules_state)
    "activation": "relu",  # model.activation
    "default_policy_scale": 1.0,  # model.default_policy_scale: NormalParamExtractor("biased_softplus_1.0")
    "scale_lb": 0.1,  # model.scale_lb: NormalParamExtractor(scale_lb=0.1)
    "tanh_loc": False,  # utils.make_iql_model: TanhNormal(distribution_kwargs={"tanh_loc": False})
    "num_qvalue_nets": 2,  # IQLLoss's default, which utils.make_loss keeps
    "loss_function": "l2",  # loss.loss_function
    "temperature": 3.0,  # loss.temperature (advantage-weighted regression of the actor)
    "expectile": 0.7,  # loss.expectile
    "gamma": 0.99,  # loss.gamma: make_value_estimator(gamma=0.99)
    "tau": 0.005,  # loss.tau: SoftUpdate(loss, tau=0.005) after every step
    "lr": 3e-4,  # optim.lr: one Adam each for actor, Q and V (utils.make_iql_optimizer), stepped together
    "weight_decay": 0.0,  # optim.weight_decay
    "batch_size": 256,  # replay_buffer.batch_size
}

#: TorchRL's TD3+BC recipe: sota-implementations/td3_bc/config.yaml, read by td3_bc/utils.py and td3_bc.py.
TD3BC_RECIPE: dict[str, Any] = {
    "hidden_sizes": [256, 256],  # network.hidden_sizes: actor and Q MLPs (utils.make_td3_agent)
    "activation": "relu",  # network.activation
    "num_qvalue_nets": 2,  # utils.make_loss_module: TD3BCLoss(num_qvalue_nets=2)
    "loss_function": "l2",  # optim.loss_function
    "policy_noise": 0.2,  # optim.policy_noise: target policy smoothing noise
    "noise_clip": 0.5,  # optim.noise_clip
    "alpha": 2.5,  # optim.alpha: lambda = alpha / mean|Q| weighs Q against the BC term
    "gamma": 0.99,  # optim.gamma: make_value_estimator(gamma=0.99)
    "target_update_polyak": 0.995,  # optim.target_update_polyak: SoftUpdate(loss, eps=0.995), with each actor step
    "policy_update_delay": 2,  # optim.policy_update_delay: actor + targets every 2nd step (td3_bc.py)
    "lr": 3e-4,  # optim.lr: one Adam for the actor, one for Q (utils.make_optimizer)
    "adam_eps": 1e-4,  # optim.adam_eps
    "weight_decay": 0.0,  # optim.weight_decay
    "batch_size": 256,  # replay_buffer.batch_size
}

#: DTQL's settings that are the same for every task (dtql_spec.md section 4; examples/config/config.yaml).
DTQL_FIXED: dict[str, Any] = {
    "discount": 0.99,  # loss.discount
    "tau": 0.005,  # loss.tau: Polyak rate of the target critic (it reranks the candidates)
    "critic_lr": 3e-4,  # optim.critic_lr: the reference's critic rate, whatever the task's lr
    "loss_function": "l2",  # loss.loss_function
    "temperature": 1.0,  # policy.temperature: softmax over raw Q values when reranking
    "trust_region_ratio": 1.0,  # loss.trust_region_ratio (alpha="auto" only)
}


def dataset_slug(source: str) -> str:
    """A file-name form of a dataset id (names the runs' folders and the curves' files).

    Examples:
        >>> dataset_slug("d4rl-like/hopper/medium-v0")
        'd4rl-like-hopper-medium-v0'
    """
    return str(source).strip("/").replace("/", "-")


class PresetError(ValueError):
    """A dataset whose DTQL task preset cannot be named (the message says how to name it)."""


# =====================================================================================================================
# DTQL task presets
# =====================================================================================================================


@dataclass(frozen=True)
class DTQLPreset:
    """The per-task DTQL settings of one ``examples/config/task/<task>.yaml`` file."""

    task: str
    alpha: float
    lr: float
    lr_decay: bool
    expectile: float
    gamma_nll: float
    batch_size: int
    path: str


def dataset_family_and_kind(source: str) -> tuple[str, str]:
    """``(family, kind)`` of a ``<namespace>/<family>/<kind>-v<N>`` dataset id.

    Raises:
        PresetError: ``source`` is not of that form.

    Examples:
        >>> dataset_family_and_kind("d4rl-like/walker2d/medium-v0")
        ('walker2d', 'medium')
    """
    parts = str(source).split("/")
    kind, sep, version = parts[-1].rpartition("-v") if len(parts) == 3 else ("", "", "")
    if not sep or not version.isdigit() or not parts[1]:
        raise PresetError(
            f"dataset {source!r}: the benchmark maps a dataset to its DTQL task preset by its id, "
            "'<namespace>/<family>/<kind>-v<N>' (e.g. local/hopper/medium-v0 -> hopper-medium-v2); pass the dataset "
            "by such an id (a Minari dataset under $MINARI_DATASETS_PATH, or the embedded default)."
        )
    return parts[1], kind


def preset_name(source: str) -> str:
    """The DTQL task preset of a dataset: ``<family>-<kind>-v2`` (the D4RL task the paper tuned it on).

    Examples:
        >>> preset_name("d4rl-like/walker2d/medium-v0")
        'walker2d-medium-v2'
    """
    family, kind = dataset_family_and_kind(source)
    return f"{family}-{kind}-v2"


def load_dtql_preset(source: str, preset_dir: Path = PRESET_DIR) -> DTQLPreset:
    """Reads the DTQL task preset of a dataset from ``examples/config/task/``.

    Raises:
        PresetError: no preset file for the dataset's family and kind.

    Examples:
        >>> load_dtql_preset("local/halfcheetah/medium-v1").alpha
        1.0
    """
    name = preset_name(source)
    path = preset_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in preset_dir.glob("*-v2.yaml"))
        raise PresetError(f"dataset {source!r} maps to the DTQL preset {name!r}, but {path} does not exist; "
                          f"presets: {known}.")  # fmt: skip
    config = OmegaConf.to_container(OmegaConf.load(path))
    loss, optim = config["loss"], config["optim"]
    return DTQLPreset(
        task=name,
        alpha=float(loss["alpha"]),
        lr=float(optim["lr"]),
        lr_decay=bool(optim["lr_decay"]),
        expectile=float(loss["expectile"]),
        gamma_nll=float(loss.get("gamma_nll", 0.0)),
        batch_size=int(optim["batch_size"]),
        path=str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path),
    )


# =====================================================================================================================
# The method interface
# =====================================================================================================================


class NamedOptimizers(dict):
    """``{name: optimizer}`` with the ``state_dict`` / ``load_state_dict`` that checkpoints need.

    Examples:
        >>> optimizers = NamedOptimizers(actor=torch.optim.Adam([torch.zeros(1, requires_grad=True)]))
        >>> sorted(optimizers.state_dict())
        ['actor']
    """

    def state_dict(self) -> dict[str, dict]:
        """Every optimizer's state, by name."""
        return {name: optimizer.state_dict() for name, optimizer in self.items()}

    def load_state_dict(self, state_dict: Mapping[str, dict]) -> None:
        """Restores the states written by :meth:`state_dict`."""
        missing = sorted(set(self) - set(state_dict))
        if missing:
            raise KeyError(f"the saved optimizer states have no {missing} entries (another method's checkpoint?).")
        for name, optimizer in self.items():
            optimizer.load_state_dict(state_dict[name])


UpdateFn = Callable[[TensorDictBase, int], TensorDictBase]


@dataclass
class MethodRun:
    """One method, built and ready to train: what the benchmark loop, the checkpoints and the evaluation use.

    Attributes:
        method: the method's name (:data:`METHODS`).
        loss: the loss module; its ``state_dict`` holds every network and target network.
        optimizers: an object with ``state_dict`` / ``load_state_dict`` (checkpoints).
        schedulers: learning-rate schedulers, in a fixed order (checkpoints).
        update: ``update(batch, step)``: one gradient step at run step ``step`` (from 0); returns detached losses.
        policies: the acting policies, ``{mode: policy}`` (:data:`METHOD_MODES`).
        settings: every hyper-parameter, for the run's JSON.
    """

    method: str
    loss: LossModule
    optimizers: Any
    schedulers: list
    update: UpdateFn
    policies: dict[str, TensorDictModuleBase]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildOptions:
    """What every method builder takes besides the dataset.

    Attributes:
        pretrain_steps: DTQL's pretraining steps (diffusion + critic only) at the start of the run.
        steps: main-phase steps (DTQL's cosine decay spans them).
        hidden_dim: ``None``: each method's own network widths; an int: every hidden layer that wide (tests).
        num_candidates: DTQL's reranking candidates per state.
        diffusion_num_steps: sampling steps of the diffusion BC policy.
        compile: ``torch.compile`` DTQL's update (``make_dtql_update_fn(compile=True)``).
        device: where the networks live.
    """

    pretrain_steps: int
    steps: int
    hidden_dim: int | None = None
    num_candidates: int = 1024
    diffusion_num_steps: int = 10
    compile: bool = False
    device: str = "cpu"


def build_method(method: str, info: OfflineDatasetInfo, source: str, options: BuildOptions) -> MethodRun:
    """The :class:`MethodRun` of ``method`` on a dataset (``source``: its id, which names DTQL's preset).

    Raises:
        ValueError: an unknown method.

    Examples:
        >>> from torchrl.data import Bounded, Unbounded
        >>> info = OfflineDatasetInfo("embedded/hopper/medium-v0", "Hopper-v5", Unbounded(shape=(11,)),
        ...                           Bounded(-1.0, 1.0, shape=(3,)), None, None, 0, 0, None)
        >>> run = build_method("td3bc", info, info.dataset_id, BuildOptions(pretrain_steps=0, steps=2, hidden_dim=8))
        >>> sorted(run.policies), sorted(run.optimizers)
        (['mean'], ['actor', 'critic'])
    """
    builders = {"iql": make_iql, "td3bc": make_td3bc, **{name: make_dtql for name in DTQL_ALPHA_RULES}}
    if method not in builders:
        raise ValueError(f"unknown method {method!r}: choose among {list(METHODS)}.")
    if options.compile:
        # Each run compiles new modules; dynamo keeps the graphs of the previous runs and, past its recompile limit
        # (8), silently runs the update eager. One run per process at a time, so forgetting them is safe.
        torch.compiler.reset()
    return builders[method](method, info, source, options)


# =====================================================================================================================
# DTQL (the package)
# =====================================================================================================================


def make_dtql(method: str, info: OfflineDatasetInfo, source: str, options: BuildOptions) -> MethodRun:
    """DTQL with the dataset's task preset; ``dtql-auto`` and ``dtql-qscale`` tune alpha (``alpha="auto"``, with the
    rule of :data:`DTQL_ALPHA_RULES`)."""
    preset = load_dtql_preset(source)
    rule = DTQL_ALPHA_RULES[method]
    alpha: float | str = preset.alpha if rule is None else "auto"
    modules = make_dtql_modules(info.observation_spec, info.action_spec, hidden_dim=options.hidden_dim,
                                diffusion_num_steps=options.diffusion_num_steps, device=options.device)  # fmt: skip
    loss = DTQLLoss(
        **modules,
        alpha=alpha,
        auto_alpha=rule or "multiplier",
        trust_region_ratio=DTQL_FIXED["trust_region_ratio"],
        alpha_per_q=ALPHA_PER_Q,
        gamma_nll=preset.gamma_nll,
        expectile=preset.expectile,
        loss_function=DTQL_FIXED["loss_function"],
        check_finite=False,  # the data were checked when loaded; True adds a host sync per batch
    )
    loss.make_value_estimator(gamma=DTQL_FIXED["discount"])
    target_updater = SoftUpdate(loss, tau=DTQL_FIXED["tau"])
    optimizers = make_dtql_optimizers(loss, lr=preset.lr, critic_lr=DTQL_FIXED["critic_lr"])
    schedulers = dtql_schedulers(optimizers.network_optimizers(), preset.lr_decay, options.steps)
    step_fn = dtql_step_function(loss, optimizers, target_updater, compile=options.compile)

    def update(batch: TensorDictBase, step: int) -> TensorDictBase:
        pretrain = step < options.pretrain_steps
        out = step_fn(batch, pretrain)
        if not pretrain:
            for scheduler in schedulers:
                scheduler.step()
        return out

    modes = METHOD_MODES[method]
    # compile=True compiles the candidates' scoring too (several times faster at an evaluation's batch of envs)
    policies = make_acting_policies(loss, modes, num_candidates=options.num_candidates,
                                    temperature=DTQL_FIXED["temperature"], compile=options.compile)  # fmt: skip
    settings = {"preset": asdict(preset), "alpha": alpha, **DTQL_FIXED, "num_candidates": options.num_candidates,
                "diffusion_num_steps": options.diffusion_num_steps,
                "networks": "make_dtql_modules defaults (reference sizes)" if options.hidden_dim is None
                else f"hidden_dim={options.hidden_dim}"}  # fmt: skip
    if rule == "q_scale":  # (the other methods' settings predate the rule, and their committed runs keep them)
        settings.update(auto_alpha=rule, alpha_per_q=ALPHA_PER_Q)
    return MethodRun(method, loss, optimizers, schedulers, update, policies, settings)


def dtql_schedulers(optimizers: Sequence[torch.optim.Optimizer], lr_decay: bool, steps: int) -> list:
    """The preset's cosine decay to 0 over the main phase on the three network optimizers (``[]`` without it).

    Examples:
        >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> [type(s).__name__ for s in dtql_schedulers([opt], True, 10)], dtql_schedulers([opt], False, 10)
        (['CosineAnnealingLR'], [])
    """
    if not lr_decay:
        return []
    return [CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=0.0) for optimizer in optimizers]


def dtql_step_function(
    loss: DTQLLoss, optimizers: Any, target_updater: SoftUpdate, *, compile: bool
) -> Callable[[TensorDictBase, bool], TensorDictBase]:
    """``step(batch, pretrain)``: :func:`~torchrl_dtql.dtql_update_step` (its cached fast updater), or with
    ``compile=True`` the compiled :func:`~torchrl_dtql.make_dtql_update_fn` (the same step, compiled losses)."""
    if compile:
        update = make_dtql_update_fn(loss, optimizers, target_updater=target_updater, compile=True)
        return lambda batch, pretrain: update(batch, pretrain=pretrain)
    return lambda batch, pretrain: dtql_update_step(loss, optimizers, batch, pretrain=pretrain,
                                                    target_updater=target_updater)  # fmt: skip


# =====================================================================================================================
# TorchRL's IQL and TD3+BC, as TorchRL's recipes build them
# =====================================================================================================================

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def hidden_sizes(recipe: Mapping[str, Any], hidden_dim: int | None) -> list[int]:
    """The recipe's hidden sizes, or as many layers ``hidden_dim`` wide.

    Examples:
        >>> hidden_sizes(IQL_RECIPE, None), hidden_sizes(IQL_RECIPE, 8)
        ([256, 256], [8, 8])
    """
    sizes = list(recipe["hidden_sizes"])
    return sizes if hidden_dim is None else [hidden_dim] * len(sizes)


def make_iql(method: str, info: OfflineDatasetInfo, source: str, options: BuildOptions) -> MethodRun:
    """TorchRL's ``IQLLoss`` with TorchRL's offline recipe (:data:`IQL_RECIPE`): a TanhNormal actor, twin Q and V,
    three Adams stepped together on the summed losses, ``SoftUpdate(tau=0.005)`` after each step."""
    recipe = IQL_RECIPE
    obs_dim, act_dim = info.observation_size, info.action_size
    cells = hidden_sizes(recipe, options.hidden_dim)
    activation = ACTIVATIONS[recipe["activation"]]
    action_spec = info.action_spec.to(options.device)
    actor_net = nn.Sequential(
        MLP(obs_dim, 2 * act_dim, num_cells=cells, activation_class=activation),
        NormalParamExtractor(scale_mapping=f"biased_softplus_{recipe['default_policy_scale']}",
                             scale_lb=recipe["scale_lb"]),  # fmt: skip
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high,
                             "tanh_loc": recipe["tanh_loc"]},  # fmt: skip
        default_interaction_type=ExplorationType.RANDOM,
    )
    qvalue = ValueOperator(MLP(obs_dim + act_dim, 1, num_cells=cells, activation_class=activation),
                           in_keys=["observation", "action"])  # fmt: skip
    value = ValueOperator(MLP(obs_dim, 1, num_cells=cells, activation_class=activation), in_keys=["observation"])
    loss = IQLLoss(actor.to(options.device), qvalue.to(options.device), value_network=value.to(options.device),
                   num_qvalue_nets=recipe["num_qvalue_nets"], loss_function=recipe["loss_function"],
                   temperature=recipe["temperature"], expectile=recipe["expectile"])  # fmt: skip
    loss.make_value_estimator(gamma=recipe["gamma"])
    target_updater = SoftUpdate(loss, tau=recipe["tau"])
    adam = {"lr": recipe["lr"], "weight_decay": recipe["weight_decay"]}
    optimizers = NamedOptimizers(
        actor=torch.optim.Adam(list(loss.actor_network_params.flatten_keys().values()), **adam),
        qvalue=torch.optim.Adam(list(loss.qvalue_network_params.flatten_keys().values()), **adam),
        value=torch.optim.Adam(list(loss.value_network_params.flatten_keys().values()), **adam),
    )
    grouped = group_optimizers(*optimizers.values())

    def update(batch: TensorDictBase, step: int) -> TensorDictBase:
        grouped.zero_grad(set_to_none=True)
        out = loss(batch)
        (out["loss_actor"] + out["loss_value"] + out["loss_qvalue"]).backward()
        grouped.step()
        target_updater.step()
        return out.detach()

    policies = make_acting_policies(loss, METHOD_MODES[method])
    settings = {**recipe, "hidden_sizes": cells, "recipe": f"{TORCHRL_RECIPES}/iql/offline_config.yaml"}
    return MethodRun(method, loss, optimizers, [], update, policies, settings)


def make_td3bc(method: str, info: OfflineDatasetInfo, source: str, options: BuildOptions) -> MethodRun:
    """TorchRL's ``TD3BCLoss`` with TorchRL's recipe (:data:`TD3BC_RECIPE`): a tanh-squashed deterministic actor and
    twin Q; the critic steps every step, the actor and the targets every ``policy_update_delay`` steps."""
    recipe = TD3BC_RECIPE
    obs_dim, act_dim = info.observation_size, info.action_size
    cells = hidden_sizes(recipe, options.hidden_dim)
    activation = ACTIVATIONS[recipe["activation"]]
    action_spec = info.action_spec.to(options.device)
    actor = TensorDictSequential(
        TensorDictModule(MLP(obs_dim, act_dim, num_cells=cells, activation_class=activation),
                         in_keys=["observation"], out_keys=["param"]),  # fmt: skip
        TanhModule(in_keys=["param"], out_keys=["action"], spec=action_spec),
    )
    qvalue = ValueOperator(MLP(obs_dim + act_dim, 1, num_cells=cells, activation_class=activation),
                           in_keys=["action", "observation"])  # fmt: skip
    loss = TD3BCLoss(actor.to(options.device), qvalue.to(options.device), action_spec=action_spec,
                     num_qvalue_nets=recipe["num_qvalue_nets"], loss_function=recipe["loss_function"],
                     delay_actor=True, delay_qvalue=True, policy_noise=recipe["policy_noise"],
                     noise_clip=recipe["noise_clip"], alpha=recipe["alpha"])  # fmt: skip
    loss.make_value_estimator(gamma=recipe["gamma"])
    target_updater = SoftUpdate(loss, eps=recipe["target_update_polyak"])
    adam = {"lr": recipe["lr"], "weight_decay": recipe["weight_decay"], "eps": recipe["adam_eps"]}
    optimizers = NamedOptimizers(
        actor=torch.optim.Adam(list(loss.actor_network_params.values(True, True)), **adam),
        critic=torch.optim.Adam(list(loss.qvalue_network_params.values(True, True)), **adam),
    )
    delay = recipe["policy_update_delay"]

    def update(batch: TensorDictBase, step: int) -> TensorDictBase:
        loss_qvalue, _ = loss.qvalue_loss(batch)
        loss_qvalue.backward()
        optimizers["critic"].step()
        optimizers["critic"].zero_grad(set_to_none=True)
        out = {"loss_qvalue": loss_qvalue.detach()}
        if step % delay == 0:  # the recipe updates the actor (and the targets) on steps 0, delay, 2 delay...
            loss_actor, metadata = loss.actor_loss(batch)
            loss_actor.backward()
            optimizers["actor"].step()
            optimizers["actor"].zero_grad(set_to_none=True)
            target_updater.step()
            out.update(loss_actor=loss_actor.detach(), **{k: v.detach() for k, v in metadata.items()})
        return TensorDict(out)

    policies = make_acting_policies(loss, METHOD_MODES[method])
    settings = {**recipe, "hidden_sizes": cells, "recipe": f"{TORCHRL_RECIPES}/td3_bc/config.yaml"}
    return MethodRun(method, loss, optimizers, [], update, policies, settings)
