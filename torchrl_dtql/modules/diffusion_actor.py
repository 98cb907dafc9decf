"""The EDM diffusion policy: a behaviour-cloning model for DTQL's trust region, and an iterative-sampling actor.

:class:`EDMDiffusionModel` wraps any denoiser backbone in the EDM preconditioning and exposes the weighted
denoising loss (used by :meth:`DTQLLoss.diffusion_loss` on dataset actions and by the trust-region term on policy
actions) and an ODE sampler. :class:`EDMDiffusionActor` is the TensorDictModule that reads ``"observation"`` and
writes ``"action"``, so the same object is also the iterative diffusion-BC baseline that DTQL is compared with.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchrl.envs.utils import ExplorationType, exploration_type
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.modules import SafeModule

from torchrl_dtql.modules.edm import (
    EDMConfig,
    LogLogisticSigmaSampler,
    edm_preconditioning,
    edm_sample,
    karras_sigmas,
)

__all__ = ["EDMDiffusionModel", "EDMDiffusionActor"]

EDM_SOLVERS = ("euler", "heun")


class EDMDiffusionModel(nn.Module):
    """EDM preconditioning, loss and sampler around a denoiser backbone ``F(c_in x, s, c_noise)``.

    Args:
        denoiser: the backbone, e.g. :class:`~torchrl_dtql.modules.denoiser.EDMDenoiserNetwork`; called as
            ``denoiser(c_in * x_noisy, observation, c_noise)``.
        action_low: lower action bound (tensor or float), used by ``clip_denoised`` and to clamp samples.
        action_high: upper action bound.

    Keyword Args:
        edm: the noise constants (``sigma_data=0.5, sigma_min=0.002, sigma_max=80``).
        clip_denoised: clamp ``D(x, s, sigma)`` to the action bounds in the loss and the sampler, as the
            reference does for D4RL (``False`` for the 2D toy, whose actions are unbounded).
        num_steps: default number of sampling steps.
        solver: default ODE solver, ``"euler"`` or ``"heun"``.
        sigma_sampling_dtype: precision of the training noise-level sampler (float64 in the reference).

    Examples:
        >>> from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork
        >>> model = EDMDiffusionModel(EDMDenoiserNetwork(2, 3, hidden_dim=32), -1.0, 1.0)
        >>> obs, act = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
        >>> model.denoising_loss(act, obs).shape
        torch.Size([8])
        >>> model.sample(obs, num_steps=3).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        denoiser: nn.Module,
        action_low: Tensor | float,
        action_high: Tensor | float,
        *,
        edm: EDMConfig | None = None,
        clip_denoised: bool = True,
        num_steps: int = 10,
        solver: str = "heun",
        sigma_sampling_dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if solver not in EDM_SOLVERS:
            raise ValueError(f"Unknown EDM solver {solver!r}: choose one of {EDM_SOLVERS}.")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        self.denoiser = denoiser
        self.edm = edm if edm is not None else EDMConfig()
        self.clip_denoised = clip_denoised
        self.num_steps = num_steps
        self.solver = solver
        self.sigma_sampler = LogLogisticSigmaSampler(
            sigma_min=self.edm.sigma_min, sigma_max=self.edm.sigma_max, dtype=sigma_sampling_dtype
        )
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        if not bool((low < high).all()):
            raise ValueError(f"EDMDiffusionModel needs action_low < action_high, got {low} and {high}.")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def denoise(self, noisy_action: Tensor, observation: Tensor, sigma: Tensor) -> Tensor:
        """``D(x, s, sigma) = c_skip x + c_out F(c_in x, s, c_noise)``, clamped to the bounds if ``clip_denoised``.

        ``sigma`` broadcasts against ``noisy_action``: a scalar or a ``[*B, 1]`` tensor.
        """
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.edm.sigma_data)
        c_noise = c_noise.expand(*noisy_action.shape[:-1], 1)
        denoised = c_skip * noisy_action + c_out * self.denoiser(c_in * noisy_action, observation, c_noise)
        if self.clip_denoised:
            denoised = denoised.clamp(self.action_low, self.action_high)
        return denoised

    def denoising_loss(
        self,
        action: Tensor,
        observation: Tensor,
        *,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """The EDM-weighted denoising loss per sample: ``mean_d ((D(a + sigma eps, s, sigma) - a) / c_out)^2``.

        This is both DTQL's behaviour-cloning loss (``action`` from the dataset) and its trust-region loss
        (``action`` from the policy: gradients flow into ``action`` through the noisy input and the target).

        Args:
            action: clean actions ``[*B, action_dim]``.
            observation: conditioning observations ``[*B, observation_dim]``.

        Keyword Args:
            sigma: noise levels ``[*B, 1]``; drawn from the truncated log-logistic law when omitted.
            noise: standard normal noise like ``action``; drawn when omitted.

        Returns:
            the loss per sample, shape ``[*B]`` (averaged over action dimensions, as the reference does).
        """
        if sigma is None:
            sigma = self.sigma_sampler((*action.shape[:-1], 1), device=action.device, dtype=action.dtype)
        if noise is None:
            noise = torch.randn_like(action)
        denoised = self.denoise(action + sigma * noise, observation, sigma)
        _, c_out, _, _ = edm_preconditioning(sigma, self.edm.sigma_data)
        return ((denoised - action) / c_out).pow(2).mean(-1)

    def sample(
        self,
        observation: Tensor,
        *,
        num_steps: int | None = None,
        solver: str | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws actions by integrating the probability-flow ODE on a Karras schedule.

        Args:
            observation: ``[*B, observation_dim]``.

        Keyword Args:
            num_steps: number of ODE steps (defaults to the model's).
            solver: ``"euler"`` or ``"heun"`` (defaults to the model's).
            deterministic: start from the zero latent instead of ``sigma_max * eps``; the ODE sampler then
                returns the same action for the same observation.
            generator: an optional RNG for the initial latent.

        Returns:
            actions ``[*B, action_dim]``, clamped to the action bounds.
        """
        num_steps = self.num_steps if num_steps is None else num_steps
        solver = self.solver if solver is None else solver
        sigmas = karras_sigmas(num_steps, self.edm.sigma_min, self.edm.sigma_max, device=observation.device)
        shape = (*observation.shape[:-1], self.action_low.shape[-1] if self.action_low.ndim else self._action_dim())
        if deterministic:
            x = observation.new_zeros(shape)
        else:
            x = torch.randn(shape, device=observation.device, dtype=observation.dtype, generator=generator)
            x = x * sigmas[0]
        action = edm_sample(lambda x_t, sigma: self.denoise(x_t, observation, sigma), x, sigmas, solver)
        return action.clamp(self.action_low, self.action_high)

    def _action_dim(self) -> int:
        action_dim = getattr(self.denoiser, "action_dim", None)
        if action_dim is None:
            raise ValueError("Scalar action bounds need a denoiser with an `action_dim` attribute.")
        return action_dim

    def forward(self, observation: Tensor) -> Tensor:
        """Samples an action; deterministic (zero latent) under ``ExplorationType.DETERMINISTIC``/``MODE``/``MEAN``."""
        deterministic = exploration_type() in (
            ExplorationType.DETERMINISTIC,
            ExplorationType.MODE,
            ExplorationType.MEAN,
        )
        return self.sample(observation, deterministic=deterministic)


class EDMDiffusionActor(SafeModule):
    """A TensorDictModule diffusion policy: reads ``"observation"``, writes ``"action"`` by iterative EDM sampling.

    It is DTQL's behaviour-cloning model (trained by :meth:`DTQLLoss.diffusion_loss`, never sampled during DTQL
    training) and, used as a policy, the iterative diffusion-BC baseline. Sampling follows
    :func:`tensordict.nn.interaction_type`: random latents by default, the zero latent (hence repeatable actions)
    under ``ExplorationType.DETERMINISTIC``. Actions are clamped to the spec's bounds.

    Args:
        denoiser: the backbone network (see :class:`~torchrl_dtql.modules.denoiser.EDMDenoiserNetwork`).
        spec: the action spec (a :class:`~torchrl.data.Bounded`, or a Composite holding it under the out key).

    Keyword Args:
        in_keys: the observation key, ``["observation"]`` by default.
        out_keys: the action key, ``["action"]`` by default.
        edm: the EDM noise constants.
        clip_denoised: clamp the denoised action to the bounds (reference: True).
        num_steps: sampling steps when acting (default 10).
        solver: ``"euler"`` or ``"heun"`` (default).
        sigma_sampling_dtype: precision of the training noise-level sampler.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> actor = EDMDiffusionActor(EDMDenoiserNetwork(2, 3, hidden_dim=32), spec, num_steps=4)
        >>> td = TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5])
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     a1 = actor(td.clone())["action"]
        ...     a2 = actor(td.clone())["action"]
        >>> bool((a1 == a2).all()), a1.shape
        (True, torch.Size([5, 2]))
    """

    def __init__(
        self,
        denoiser: nn.Module,
        spec: TensorSpec,
        *,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        edm: EDMConfig | None = None,
        clip_denoised: bool = True,
        num_steps: int = 10,
        solver: str = "heun",
        sigma_sampling_dtype: torch.dtype = torch.float64,
    ) -> None:
        in_keys = ["observation"] if in_keys is None else list(in_keys)
        out_keys = ["action"] if out_keys is None else list(out_keys)
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"EDMDiffusionActor reads one observation key and writes one action key, got in_keys={in_keys}, "
                f"out_keys={out_keys}."
            )
        action_spec = spec[out_keys[0]] if isinstance(spec, Composite) else spec
        if not isinstance(action_spec, Bounded):
            raise TypeError(
                f"EDMDiffusionActor needs a Bounded action spec to clamp its actions, got {type(action_spec).__name__}."
            )
        if not isinstance(spec, Composite):
            spec = Composite({out_keys[0]: spec})
        module = EDMDiffusionModel(
            denoiser,
            action_spec.space.low,
            action_spec.space.high,
            edm=edm,
            clip_denoised=clip_denoised,
            num_steps=num_steps,
            solver=solver,
            sigma_sampling_dtype=sigma_sampling_dtype,
        )
        super().__init__(module, in_keys=in_keys, out_keys=out_keys, spec=spec)

    @property
    def observation_key(self) -> NestedKey:
        """The key the observation is read from."""
        return self.in_keys[0]

    @property
    def action_key(self) -> NestedKey:
        """The key the action is written to."""
        return self.out_keys[0]
