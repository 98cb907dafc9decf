"""``make_dtql_modules``: every DTQL network from the data's specs, with the reference sizes as defaults."""
from __future__ import annotations

import torch
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec

from torchrl_dtql.modules.actors import make_one_step_actor
from torchrl_dtql.modules.critics import make_qvalue_network, make_value_network
from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor
from torchrl_dtql.modules.edm import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, EDMConfig

__all__ = ["bounded_action_spec", "make_diffusion_actor", "make_dtql_modules", "observation_dim_from"]


def observation_dim_from(observation_dim_or_spec: int | TensorSpec) -> int:
    """The flat observation size from an int, an observation spec, or a Composite holding ``"observation"``."""
    if isinstance(observation_dim_or_spec, int):
        return observation_dim_or_spec
    spec = observation_dim_or_spec
    if isinstance(spec, Composite):
        if "observation" not in spec.keys():
            raise KeyError(f"The observation Composite spec has no 'observation' entry (keys: {list(spec.keys())}).")
        spec = spec["observation"]
    if len(spec.shape) != 1:
        raise ValueError(f"DTQL networks need a flat observation vector, got a spec of shape {tuple(spec.shape)}.")
    return int(spec.shape[-1])


def bounded_action_spec(action_spec: int | TensorSpec) -> Bounded:
    """A :class:`~torchrl.data.Bounded` action spec: an int means ``Bounded(-1, 1, shape=(n,))``."""
    if isinstance(action_spec, int):
        return Bounded(-1.0, 1.0, shape=(action_spec,))
    if isinstance(action_spec, Composite):
        action_spec = action_spec["action"]
    if not isinstance(action_spec, Bounded):
        raise TypeError(f"DTQL needs a Bounded (box) action spec, got {type(action_spec).__name__}.")
    if len(action_spec.shape) != 1:
        raise ValueError(f"DTQL needs a flat action vector, got an action spec of shape {tuple(action_spec.shape)}.")
    return action_spec


def make_diffusion_actor(
    observation_dim: int,
    action_spec: int | TensorSpec,
    *,
    hidden_dim: int = 256,
    num_layers: int = 4,
    time_embed_dim: int = 16,
    reference_trunk_quirk: bool = True,
    clip_denoised: bool = True,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    num_steps: int = 10,
    solver: str = "heun",
    **actor_kwargs,
) -> EDMDiffusionActor:
    """The behaviour-cloning diffusion model: the reference's EDM denoiser inside an :class:`EDMDiffusionActor`.

    Args:
        observation_dim: the flat observation size.
        action_spec: a :class:`~torchrl.data.Bounded` action spec, or the action size (bounds [-1, 1]).

    Keyword Args:
        hidden_dim, num_layers, time_embed_dim: the denoiser trunk (reference: 256 x 4, a 16-dim noise embedding).
        reference_trunk_quirk: keep the reference's missing activation after the first layer.
        clip_denoised: clamp the denoised action to the bounds (reference: True).
        sigma_data, sigma_min, sigma_max: EDM constants (0.5, 0.002, 80).
        num_steps, solver: how it samples when it acts (the diffusion-BC policy).
        **actor_kwargs: passed to :class:`EDMDiffusionActor` (e.g. ``in_keys``, ``out_keys``).

    Examples:
        >>> make_diffusion_actor(3, 2, hidden_dim=16).module.num_steps
        10
    """
    spec = bounded_action_spec(action_spec)
    denoiser = EDMDenoiserNetwork(
        int(spec.shape[-1]),
        observation_dim,
        hidden_dim=hidden_dim,
        time_embed_dim=time_embed_dim,
        num_hidden_layers=num_layers,
        reference_trunk_quirk=reference_trunk_quirk,
    )
    return EDMDiffusionActor(
        denoiser,
        spec,
        edm=EDMConfig(sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max),
        clip_denoised=clip_denoised,
        num_steps=num_steps,
        solver=solver,
        **actor_kwargs,
    )


def make_dtql_modules(
    observation_dim_or_spec: int | TensorSpec,
    action_spec: int | TensorSpec,
    *,
    hidden_dim: int | None = None,
    actor_hidden_dim: int = 256,
    actor_num_layers: int = 3,
    critic_hidden_dim: int = 256,
    critic_num_layers: int = 3,
    denoiser_hidden_dim: int = 256,
    denoiser_num_layers: int = 4,
    time_embed_dim: int = 16,
    reference_trunk_quirk: bool = True,
    clip_denoised: bool = True,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    diffusion_num_steps: int = 10,
    diffusion_solver: str = "heun",
    num_qvalue_nets: int = 2,
    device: torch.device | str | None = None,
) -> dict[str, nn.Module | list[nn.Module]]:
    """Builds the one-step actor, the EDM diffusion actor, the Q ensemble and V, keyed as ``DTQLLoss`` expects.

    Args:
        observation_dim_or_spec: the observation size, or its spec.
        action_spec: a :class:`~torchrl.data.Bounded` action spec, or the action size (bounds [-1, 1]).

    Keyword Args:
        hidden_dim: if given, the width of every network (overrides the three ``*_hidden_dim``).
        actor_hidden_dim, actor_num_layers: one-step policy MLP (reference: 256 x 3, ReLU).
        critic_hidden_dim, critic_num_layers: Q and V MLPs (reference: 256 x 3, Mish; LayerNorm in Q).
        denoiser_hidden_dim, denoiser_num_layers, time_embed_dim: EDM backbone (reference: 256 x 4, 16).
        reference_trunk_quirk: keep the reference's missing activation after the denoiser's first layer.
        clip_denoised: clamp the denoised action to the bounds (reference: True).
        sigma_data, sigma_min, sigma_max: EDM constants (0.5, 0.002, 80).
        diffusion_num_steps, diffusion_solver: how the diffusion actor samples when used as a policy.
        num_qvalue_nets: size of the Q ensemble (reference: 2), each independently initialised.
        device: where to create the parameters.

    Returns:
        ``{"actor_network", "diffusion_network", "qvalue_network" (a list), "value_network"}``, so that
        ``DTQLLoss(**modules, alpha=...)`` works.

    Examples:
        >>> from torchrl_dtql import DTQLLoss
        >>> modules = make_dtql_modules(17, 6)
        >>> sorted(modules)
        ['actor_network', 'diffusion_network', 'qvalue_network', 'value_network']
        >>> loss = DTQLLoss(**modules, alpha=1.0)
    """
    obs_dim = observation_dim_from(observation_dim_or_spec)
    spec = bounded_action_spec(action_spec)
    action_dim = int(spec.shape[-1])
    if hidden_dim is not None:
        actor_hidden_dim = critic_hidden_dim = denoiser_hidden_dim = hidden_dim
    actor = make_one_step_actor(
        obs_dim, spec, hidden_dim=actor_hidden_dim, num_hidden_layers=actor_num_layers, device=device
    )
    diffusion = make_diffusion_actor(
        obs_dim,
        spec,
        hidden_dim=denoiser_hidden_dim,
        num_layers=denoiser_num_layers,
        time_embed_dim=time_embed_dim,
        reference_trunk_quirk=reference_trunk_quirk,
        clip_denoised=clip_denoised,
        sigma_data=sigma_data,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        num_steps=diffusion_num_steps,
        solver=diffusion_solver,
    )
    qvalues = [
        make_qvalue_network(obs_dim, action_dim, hidden_dim=critic_hidden_dim, num_hidden_layers=critic_num_layers)
        for _ in range(num_qvalue_nets)
    ]
    value = make_value_network(obs_dim, hidden_dim=critic_hidden_dim, num_hidden_layers=critic_num_layers)
    if device is not None:
        diffusion = diffusion.to(device)
        qvalues = [q.to(device) for q in qvalues]
        value = value.to(device)
    return {
        "actor_network": actor,
        "diffusion_network": diffusion,
        "qvalue_network": qvalues,
        "value_network": value,
    }
