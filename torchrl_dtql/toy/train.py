"""Training recipes of the 2D study: diffusion BC, DTQL and DQL-KL on a bandit, full batch, as the reference toy.

All three use the package's real pieces: the networks come from :func:`~torchrl_dtql.make_dtql_modules`, DTQL
trains with :class:`~torchrl_dtql.DTQLLoss` and :func:`~torchrl_dtql.dtql_update_step`, DQL-KL with
:class:`~torchrl_dtql.objectives.kl_distill.KLDistillLoss` and its update step. Toy specifics
(``dtql_spec.md`` section 7.1): the state is a constant 0, ``not_done = 1``, expectile 0.95, every step uses the
whole dataset, Adam with lr 3e-3 for every network, an unclamped diffusion model with ``sigma_data = 0.5``, and a
policy bounded by ``max |a|`` over the data. Unlike the reference, the discount defaults to 0 (see
:class:`ToyTrainConfig`).

The reference toy minimises ``L_TR + eta * L_Q`` (``eta = 1``); :class:`~torchrl_dtql.DTQLLoss` minimises
``alpha * L_TR + L_Q``, which is the same objective divided by ``eta`` with ``alpha = 1 / eta``. Adam is invariant
to a constant scale of the loss (up to its ``eps``), so ``alpha = 1 / eta`` reproduces the reference's steps.

As in the reference toy, DTQL trains its behaviour diffusion model from scratch *together with* the policy
(``dtql_update_step`` trains it on every step); the critic gets a short pretraining phase first. Starting it from a
fully trained behaviour model instead changes the outcome: its trust region is so sharply multimodal that the
one-step policy stays in the first mode it collapses onto (the centre), never reaching ``far``'s or ``hard``'s best
mode. Early in joint training the behaviour model is still smooth, so the trust region anneals from broad to sharp
while Q pulls the policy across the data. The ``bc`` baseline is :func:`pretrain_toy_diffusion`'s model, which does
not depend on the reward and is trained once per dataset. DQL-KL starts from that model, the recipe of the D4RL
``agents/dql_kl.py`` (see :func:`train_toy_kl` for why not from scratch).

The policy's initial spread matters too. With the constant zero state, the policy's ReLU units see zero input and
zero bias and stay at 0, so only its output bias learns: the policy is a (loc, log-std) pair moving by about ``lr``
per Adam step, from (0, ``actor_init_log_std``). A wide start (the reference's log-std 0, a tanh-Gaussian over the
whole action box) sees every mode, and finds ``hard``'s lone bonus corner; but under ``far``'s symmetric, convex Q
it never breaks the symmetry: its std grows until the tanh saturates at the box edges, beside but outside the
corner modes. A narrow start (log-std -2) breaks the symmetry at once, runs to a corner (Adam moves both coordinates
at the same rate, so along a diagonal) and settles fastest on ``near``, but cannot see ``hard``'s bonus and goes to
whichever corner it first leans towards. ``examples/toy_2d.py`` therefore starts narrow, and wide for ``hard``,
where ``alpha`` also ramps from 1 (reach the corner fast) to 5 (centre the policy on the mode rather than its outer
edge, where Q's doubled slope holds it at a constant ``alpha`` of 1 to 3).

Examples:
    >>> import torch
    >>> from torchrl_dtql.toy import make_toy_dataset
    >>> config = ToyTrainConfig(steps=2, bc_steps=2, critic_pretrain_steps=2, actor_hidden_dim=16,
    ...                         critic_hidden_dim=16, denoiser_hidden_dim=16)
    >>> data = make_toy_dataset("25gaussians", 100)
    >>> problem = make_toy_problem(data, "near")
    >>> loss = train_toy_dtql(problem, config)
    >>> sample_toy_policy(loss, 7).shape
    torch.Size([7, 2])
    >>> sample_toy_diffusion(pretrain_toy_diffusion(problem, config), 7).shape
    torch.Size([7, 2])
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_dtql.modules.actors import GaussianPolicyNetwork
from torchrl_dtql.modules.builders import make_dtql_modules
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor
from torchrl_dtql.modules.generator import GENERATION_SIGMA, make_one_step_generator
from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.kl_distill import KLDistillLoss, kl_distill_update_step, make_kl_distill_optimizers
from torchrl_dtql.objectives.update import dtql_update_step, make_dtql_optimizers
from torchrl_dtql.toy.bandit import make_bandit_batch, TOY_OBSERVATION_DIM, toy_action_spec
from torchrl_dtql.toy.datasets import ToyDataset
from torchrl_dtql.toy.rewards import make_toy_reward, ToyReward

__all__ = [
    "ToyTrainConfig",
    "ToyProblem",
    "make_toy_problem",
    "make_toy_modules",
    "pretrain_toy_diffusion",
    "train_toy_dtql",
    "train_toy_kl",
    "sample_toy_policy",
    "sample_toy_diffusion",
    "TOY_METHODS",
]

TOY_METHODS = ("dtql", "kl", "bc")
StepCallback = Callable[[int, TensorDictBase], None]


@dataclass
class ToyTrainConfig:
    """Hyper-parameters of the 2D study (reference toy values unless noted).

    Attributes:
        steps: full-batch training steps of DTQL / DQL-KL (reference: 3500).
        bc_steps: full-batch training steps of the ``bc`` baseline (:func:`pretrain_toy_diffusion`).
        critic_pretrain_steps: full-batch pretraining steps of the critic (and the behaviour model) before the
            policy's, as DTQL's pretraining phase (``dtql_update_step(pretrain=True)``); the reference toy has none.
        lr: Adam learning rate of every network (reference: 3e-3, critic included).
        actor_init_log_std: the one-step policy's initial log-std (``None``: the network's own initialisation, the
            reference's 0, a policy spread over the whole action box). See the module docs.
        alpha: weight of the trust-region (DTQL) or distillation (KL) term; the reference's ``1 / eta`` (1.0); DTQL
            also takes ``"auto"``.
        auto_alpha: how DTQL's ``alpha="auto"`` tunes it (``DTQLLoss(auto_alpha=...)``).
        alpha_end: if set, ``alpha`` ramps linearly from ``alpha`` to ``alpha_end`` over the main phase
            (``DTQLLoss.alpha`` is a schedulable coefficient); ``None`` keeps it constant, as the reference does.
        discount: the TD discount. The reference's 0.99 bootstraps onto ``V(0)`` of the same state, which only adds
            a constant to Q (about ``0.99 / 0.01`` times the reward scale) that the critic keeps chasing for thousands
            of steps, bending the policy's early moves; 0 makes Q the reward itself with the same ranking.
        expectile: the expectile of V (reference: 0.95).
        target_tau: Polyak rate of the target critic (unused by the toy's plots, kept for parity).
        actor_hidden_dim, actor_num_layers: the one-step tanh-Gaussian policy (reference: 256 x 3).
        critic_hidden_dim, critic_num_layers: Q and V (reference: 256 x 3).
        denoiser_hidden_dim, denoiser_num_layers, time_embed_dim: the diffusion models (reference: 128, 4, 4).
        generation_sigma: the KL generator's input-noise scale and time input (reference: 2.5). The generator has
            the denoiser's trunk and sizes.
        diffusion_num_steps, diffusion_solver: the BC actor's sampler (Karras schedule, EDM Heun).
    """

    steps: int = 3500
    bc_steps: int = 3000
    critic_pretrain_steps: int = 200
    lr: float = 3e-3
    actor_init_log_std: float | None = -2.0
    alpha: float | str = 1.0
    auto_alpha: str = "q_scale"
    alpha_end: float | None = None
    discount: float = 0.0
    expectile: float = 0.95
    target_tau: float = 0.005
    actor_hidden_dim: int = 256
    actor_num_layers: int = 3
    critic_hidden_dim: int = 256
    critic_num_layers: int = 3
    denoiser_hidden_dim: int = 128
    denoiser_num_layers: int = 4
    time_embed_dim: int = 4
    generation_sigma: float = GENERATION_SIGMA
    diffusion_num_steps: int = 10
    diffusion_solver: str = "heun"


@dataclass
class ToyProblem:
    """A dataset with one reward: the offline batch and what the metrics need.

    Attributes:
        data: the dataset.
        reward_name: the reward's registry name.
        reward: the reward function.
        batch: the whole dataset as one TED batch (:func:`~torchrl_dtql.toy.make_bandit_batch`).
        action_spec: ``Bounded(-max|a|, max|a|)``.
    """

    data: ToyDataset
    reward_name: str
    reward: ToyReward
    batch: TensorDict
    action_spec: Bounded


def make_toy_problem(data: ToyDataset, reward_name: str, *, reward_scale: float = 1.0) -> ToyProblem:
    """Scores the data with a registered reward (times ``reward_scale``) and packs it as a bandit batch."""
    reward = make_toy_reward(reward_name)
    rewards = reward_scale * reward(data.actions, data.actions)
    return ToyProblem(
        data=data,
        reward_name=reward_name,
        reward=reward,
        batch=make_bandit_batch(data.actions, rewards),
        action_spec=toy_action_spec(data.actions),
    )


def make_toy_modules(action_spec: Bounded, config: ToyTrainConfig) -> dict:
    """:func:`~torchrl_dtql.make_dtql_modules` with the toy's sizes, an unclamped diffusion model and
    ``sigma_data = 0.5``."""
    return make_dtql_modules(
        TOY_OBSERVATION_DIM,
        action_spec,
        actor_hidden_dim=config.actor_hidden_dim,
        actor_num_layers=config.actor_num_layers,
        critic_hidden_dim=config.critic_hidden_dim,
        critic_num_layers=config.critic_num_layers,
        denoiser_hidden_dim=config.denoiser_hidden_dim,
        denoiser_num_layers=config.denoiser_num_layers,
        time_embed_dim=config.time_embed_dim,
        clip_denoised=False,
        sigma_data=0.5,
        diffusion_num_steps=config.diffusion_num_steps,
        diffusion_solver=config.diffusion_solver,
    )


def pretrain_toy_diffusion(
    problem: ToyProblem, config: ToyTrainConfig, *, callback: StepCallback | None = None
) -> EDMDiffusionActor:
    """Trains the behaviour diffusion model on the whole dataset for ``config.bc_steps`` steps.

    The loss is the EDM denoising loss that :meth:`DTQLLoss.diffusion_loss` computes; the result is also the
    ``bc`` method's policy (sampled iteratively). The reward plays no part.
    """
    diffusion = make_toy_modules(problem.action_spec, config)["diffusion_network"]
    model = diffusion.module
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    actions, observation = problem.batch["action"], problem.batch["observation"]
    for step in range(config.bc_steps):
        loss = model.denoising_loss(actions, observation).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step, TensorDict(loss_diffusion=loss.detach()))
    return diffusion


def _toy_loss_modules(
    problem: ToyProblem, config: ToyTrainConfig, diffusion: EDMDiffusionActor | None
) -> dict:
    modules = make_toy_modules(problem.action_spec, config)
    if diffusion is not None:
        modules["diffusion_network"] = copy.deepcopy(diffusion)
    if config.actor_init_log_std is not None:
        _set_initial_log_std(modules["actor_network"], config.actor_init_log_std)
    return modules


def _set_initial_log_std(actor: torch.nn.Module, log_std: float) -> None:
    """Sets the output bias of the policy's log-std head; with the toy's zero state it *is* the initial log-std."""
    network = next(m for m in actor.modules() if isinstance(m, GaussianPolicyNetwork))
    head = network.net[-1]
    action_dim = head.out_features // 2
    with torch.no_grad():
        head.bias[action_dim:] = log_std


def _train(
    loss: DTQLLoss,
    update: Callable[..., TensorDictBase],
    optimizers,
    problem: ToyProblem,
    config: ToyTrainConfig,
    callback: StepCallback | None,
) -> None:
    """``config.critic_pretrain_steps`` pretraining steps (critic and behaviour model), then ``config.steps``."""
    target_updater = SoftUpdate(loss, tau=config.target_tau)
    for step in range(config.critic_pretrain_steps):
        update(loss, optimizers, problem.batch, pretrain=True)
    for step in range(config.steps):
        if config.alpha_end is not None:
            loss.alpha = config.alpha + (config.alpha_end - config.alpha) * step / max(config.steps - 1, 1)
        losses = update(loss, optimizers, problem.batch, target_updater=target_updater)
        if callback is not None:
            callback(step, losses)


def train_toy_dtql(
    problem: ToyProblem,
    config: ToyTrainConfig,
    *,
    diffusion: EDMDiffusionActor | None = None,
    callback: StepCallback | None = None,
) -> DTQLLoss:
    """DTQL on the bandit: ``config.steps`` calls of :func:`~torchrl_dtql.dtql_update_step` on the full batch.

    Args:
        problem: the dataset and reward.
        config: the hyper-parameters; ``alpha = 1 / eta`` of the reference.

    Keyword Args:
        diffusion: a behaviour model to start from (copied); ``None`` (the reference toy) trains one from scratch
            along with the policy.
        callback: called as ``callback(step, losses)`` after every main-phase step.

    Returns:
        the trained loss module; sample its one-step policy with :func:`sample_toy_policy`.
    """
    loss = DTQLLoss(**_toy_loss_modules(problem, config, diffusion), alpha=config.alpha, auto_alpha=config.auto_alpha,
                    expectile=config.expectile)
    loss.make_value_estimator(gamma=config.discount)
    optimizers = make_dtql_optimizers(loss, lr=config.lr, critic_lr=config.lr)
    _train(loss, dtql_update_step, optimizers, problem, config, callback)
    return loss


def train_toy_kl(
    problem: ToyProblem,
    config: ToyTrainConfig,
    *,
    diffusion: EDMDiffusionActor | None = None,
    callback: StepCallback | None = None,
) -> KLDistillLoss:
    """DQL-KL on the bandit: a one-step generator distilled by score distillation, ``config.steps`` full-batch
    calls of :func:`~torchrl_dtql.objectives.kl_distill.kl_distill_update_step` after the critic pretraining.

    With a pretrained ``diffusion`` model (the recipe of the D4RL ``agents/dql_kl.py``, and what
    ``examples/toy_2d.py`` does), the behaviour model starts from it and the generator and the fake-score model start
    from its weights. Without one, all three start from scratch, as the reference toy does; here that is unstable:
    the unbounded generator runs off to ``|a|`` of 1e7-1e10 within a few hundred steps, before the behaviour model
    has learnt anything to pull it back. Arguments as :func:`train_toy_dtql`.
    """
    modules = _toy_loss_modules(problem, config, diffusion)
    modules["actor_network"] = make_one_step_generator(
        TOY_OBSERVATION_DIM,
        problem.action_spec,
        hidden_dim=config.denoiser_hidden_dim,
        time_embed_dim=config.time_embed_dim,
        num_hidden_layers=config.denoiser_num_layers,
        generation_sigma=config.generation_sigma,
    )
    fake_score = make_toy_modules(problem.action_spec, config)["diffusion_network"]
    loss = KLDistillLoss(**modules, fake_score_network=fake_score, alpha=config.alpha, expectile=config.expectile)
    if diffusion is not None:
        loss.copy_diffusion_to_generator()
        loss.copy_diffusion_to_fake_score()
    loss.make_value_estimator(gamma=config.discount)
    optimizers = make_kl_distill_optimizers(loss, lr=config.lr, critic_lr=config.lr)
    _train(loss, kl_distill_update_step, optimizers, problem, config, callback)
    return loss


def _zero_states(num_samples: int, device: torch.device | str | None = None) -> TensorDict:
    return TensorDict(observation=torch.zeros(num_samples, TOY_OBSERVATION_DIM, device=device), batch_size=[num_samples])


@torch.no_grad()
def sample_toy_policy(loss: DTQLLoss, num_samples: int = 1000) -> Tensor:
    """``num_samples`` stochastic actions of a trained loss's one-step policy (DTQL or KL generator) at state 0.

    The policy is run with the loss's trained (functional) parameters, under ``ExplorationType.RANDOM``.
    """
    with set_exploration_type(ExplorationType.RANDOM), loss.actor_network_params.to_module(loss.actor_network):
        samples = loss.actor_network(_zero_states(num_samples))
    return samples.get(loss.actor_network.out_keys[-1])


@torch.no_grad()
def sample_toy_diffusion(diffusion: EDMDiffusionActor, num_samples: int = 1000) -> Tensor:
    """``num_samples`` actions of the diffusion model sampled iteratively (the ``bc`` method) at state 0."""
    with set_exploration_type(ExplorationType.RANDOM):
        samples = diffusion(_zero_states(num_samples))
    return samples.get(diffusion.out_keys[-1])
