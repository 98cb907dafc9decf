"""A plain-PyTorch transcription of the DTQL reference training step, the baseline of ``bench_update.py``.

It is written the way the authors' ``agents/dtql.py`` is (sections 2-3 of the design notes' ``dtql_spec.md``):
plain ``nn.Module`` networks, three Adam optimizers stepped in the order critic, behaviour cloning, actor, three
backward passes, float64 noise-level sampling, a Polyak update of a whole critic copy, and six ``.item()`` calls
per step for logging. As in the reference, the actor's backward pass also writes (unused) gradients into the
diffusion model and the critic: they are cleared by those parts' own ``zero_grad`` before their next step.

``PlainDTQLReference.from_loss`` copies the weights of a :class:`~torchrl_dtql.DTQLLoss`, so the benchmark can check
that this baseline, ``dtql_update_step`` and the fast path train the same parameters before timing them.

Examples:
    >>> import torch
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
    >>> reference = PlainDTQLReference.from_loss(loss)
    >>> s, a = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
    >>> logs = reference.update(s, a, torch.randn(8, 1), torch.randn(8, 3), torch.zeros(8, 1, dtype=torch.bool))
    >>> sorted(logs)
    ['actor_loss', 'bc_loss', 'critic_loss', 'q_actor', 'trust_region', 'value_loss']
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn, Tensor

SIGMA_DATA, SIGMA_MIN, SIGMA_MAX = 0.5, 0.002, 80.0
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def _critic_mlp(in_features: int, hidden: int, *, layer_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(3):
        layers += [nn.Linear(in_features, hidden), *([nn.LayerNorm(hidden)] if layer_norm else []), nn.Mish()]
        in_features = hidden
    return nn.Sequential(*layers, nn.Linear(hidden, 1))


class PlainCritic(nn.Module):
    """Twin Q (LayerNorm + Mish) and V (Mish) on concatenated inputs, as the reference ``Critic``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.q1 = _critic_mlp(obs_dim + act_dim, hidden, layer_norm=True)
        self.q2 = _critic_mlp(obs_dim + act_dim, hidden, layer_norm=True)
        self.v = _critic_mlp(obs_dim, hidden, layer_norm=False)

    def forward(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([state, action], -1)
        return self.q1(x), self.q2(x)

    def q_min(self, state: Tensor, action: Tensor) -> Tensor:
        return torch.min(*self(state, action))


class PlainDenoiser(nn.Module):
    """The reference ``ScoreNetwork``: sinusoidal time embedding, then a trunk with no activation after layer 1."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, time_dim: int = 16) -> None:
        super().__init__()
        half = time_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)))
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.Mish(), nn.Linear(2 * time_dim, time_dim))
        in_features = act_dim + obs_dim + time_dim
        self.trunk = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, act_dim),
        )

    def forward(self, x: Tensor, state: Tensor, c_noise: Tensor) -> Tensor:
        angles = c_noise * self.freqs
        t_emb = self.time_mlp(torch.cat([angles.sin(), angles.cos()], -1))
        return self.trunk(torch.cat([x, state, t_emb], -1))


class PlainActor(nn.Module):
    """``DiagGaussianActorTanhAction``: a ReLU MLP, hard-clamped log-std, reparameterised tanh samples."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * act_dim),
        )  # fmt: skip

    def sample(self, state: Tensor) -> Tensor:
        mu, log_std = self.net(state).chunk(2, -1)
        std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return torch.tanh(mu + std * torch.randn_like(mu)).clamp(-1.0, 1.0)


def _loglogistic_cdf(sigma: float) -> float:
    return 1.0 / (1.0 + math.exp(-(math.log(sigma) - math.log(SIGMA_DATA)) / 0.5))


CDF_MIN, CDF_MAX = _loglogistic_cdf(SIGMA_MIN), _loglogistic_cdf(SIGMA_MAX)


def edm_bc_loss(denoiser: nn.Module, action: Tensor, state: Tensor) -> Tensor:
    """The reference's EDM loss: float64 log-logistic noise levels, clamped denoiser, ``1 / c_out^2`` weight."""
    u = torch.rand(action.shape[0], 1, dtype=torch.float64, device=action.device) * (CDF_MAX - CDF_MIN) + CDF_MIN
    sigma = (math.log(SIGMA_DATA) + 0.5 * torch.logit(u)).exp().float()
    noise = torch.randn_like(action)
    total = sigma**2 + SIGMA_DATA**2
    c_skip, c_out, c_in = SIGMA_DATA**2 / total, sigma * SIGMA_DATA / total.sqrt(), 1 / total.sqrt()
    x_noisy = action + sigma * noise
    denoised = c_skip * x_noisy + c_out * denoiser(c_in * x_noisy, state, sigma.log() / 4)
    return ((denoised.clamp(-1.0, 1.0) - action) / c_out).pow(2).mean()


class PlainDTQLReference:
    """The reference DTQL agent's ``train`` step, in plain PyTorch (see the module docstring).

    Args:
        obs_dim: observation size.
        act_dim: action size (bounds [-1, 1]).

    Keyword Args:
        hidden: width of every network (reference: 256).
        alpha: trust-region weight.
        lr: learning rate of the actor and the diffusion model (the critic uses 3e-4).
        expectile: the value regression's expectile.
        discount: the discount.
        tau: the Polyak rate of the critic copy.
        device: where the networks live.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        hidden: int = 256,
        alpha: float = 1.0,
        lr: float = 3e-4,
        expectile: float = 0.7,
        discount: float = 0.99,
        tau: float = 0.005,
        device: torch.device | str | None = None,
    ) -> None:
        self.critic = PlainCritic(obs_dim, act_dim, hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.denoiser = PlainDenoiser(obs_dim, act_dim, hidden).to(device)
        self.actor = PlainActor(obs_dim, act_dim, hidden).to(device)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.bc_optimizer = torch.optim.Adam(self.denoiser.parameters(), lr=lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.alpha, self.expectile, self.discount, self.tau = alpha, expectile, discount, tau

    @classmethod
    def from_loss(cls, loss, **kwargs) -> PlainDTQLReference:
        """A reference agent with the weights of a :class:`~torchrl_dtql.DTQLLoss` (reference-shaped networks)."""
        actor = loss.actor_network_params["module", "0", "module"]
        qvalues = loss.qvalue_network_params["module"]
        obs_dim = actor["net", "0", "weight"].shape[1]
        act_dim = qvalues["net", "0", "weight"].shape[-1] - obs_dim
        hidden = actor["net", "0", "weight"].shape[0]
        kwargs.setdefault("alpha", float(loss.alpha))
        kwargs.setdefault("expectile", float(loss.expectile))
        agent = cls(obs_dim, act_dim, hidden=hidden, **kwargs)
        with torch.no_grad():
            agent.actor.load_state_dict(actor.flatten_keys(".").to_dict())
            q_state = qvalues.flatten_keys(".")
            agent.critic.q1.load_state_dict({k.removeprefix("net."): v[0] for k, v in q_state.items()})
            agent.critic.q2.load_state_dict({k.removeprefix("net."): v[1] for k, v in q_state.items()})
            v_state = loss.value_network_params["module"].flatten_keys(".")
            agent.critic.v.load_state_dict({k.removeprefix("net."): v for k, v in v_state.items()})
            denoiser = loss.diffusion_network_params["module", "denoiser"]
            agent.denoiser.time_mlp.load_state_dict(denoiser["time_embedding", "mlp"].flatten_keys(".").to_dict())
            agent.denoiser.trunk.load_state_dict(denoiser["trunk"].flatten_keys(".").to_dict())
        agent.critic_target = copy.deepcopy(agent.critic)
        return agent

    def _critic_step(self, state: Tensor, action: Tensor, reward: Tensor, next_state: Tensor, terminated: Tensor):
        current_q1, current_q2 = self.critic(state, action)
        target_q = self.critic.q_min(state, action).detach()
        value = self.critic.v(state)
        diff = target_q - value
        value_loss = (torch.abs(self.expectile - (diff < 0).float()) * diff.pow(2)).mean()
        next_v = self.critic.v(next_state).detach()
        target = reward + (1.0 - terminated.float()) * self.discount * next_v
        critic_loss = nn.functional.mse_loss(current_q1, target) + nn.functional.mse_loss(current_q2, target)
        self.critic_optimizer.zero_grad()
        (critic_loss + value_loss).backward()
        self.critic_optimizer.step()
        return critic_loss, value_loss

    def _bc_step(self, state: Tensor, action: Tensor) -> Tensor:
        bc_loss = edm_bc_loss(self.denoiser, action, state)
        self.bc_optimizer.zero_grad()
        bc_loss.backward()
        self.bc_optimizer.step()
        return bc_loss

    def update(
        self,
        state: Tensor,
        action: Tensor,
        reward: Tensor,
        next_state: Tensor,
        terminated: Tensor,
        *,
        pretrain: bool = False,
    ) -> dict[str, float]:
        """One reference step (``pretrain``: BC then critic, nothing else); returns the logged floats."""
        if pretrain:
            bc_loss = self._bc_step(state, action)
            critic_loss, value_loss = self._critic_step(state, action, reward, next_state, terminated)
            return {"bc_loss": bc_loss.item(), "critic_loss": critic_loss.item(), "value_loss": value_loss.item()}
        critic_loss, value_loss = self._critic_step(state, action, reward, next_state, terminated)
        bc_loss = self._bc_step(state, action)

        action_pi = self.actor.sample(state)
        trust_region = edm_bc_loss(self.denoiser, action_pi, state)
        q_actor = self.critic.q_min(state, action_pi).mean()
        actor_loss = self.alpha * trust_region - q_actor
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        with torch.no_grad():
            for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters()):
                target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
        return {
            "actor_loss": actor_loss.item(),
            "bc_loss": bc_loss.item(),
            "critic_loss": critic_loss.item(),
            "q_actor": q_actor.item(),
            "trust_region": trust_region.item(),
            "value_loss": value_loss.item(),
        }
