"""A fast DTQL update: the reference step's losses and gradients, with far less overhead per step.

:func:`~torchrl_dtql.dtql_update_step` with ``fast=False`` calls the four public loss methods of
:class:`~torchrl_dtql.DTQLLoss` and runs three backward passes. :class:`DTQLUpdater` computes the same quantities, in
the same order and from the same random draws, and changes only how the work is scheduled. The maths is not
repeated here: every loss term is the function of :mod:`torchrl_dtql.objectives.terms` that the loss methods call,
reduced by :meth:`~torchrl_dtql.DTQLLoss.reduce`, with the Q target of :meth:`~torchrl_dtql.DTQLLoss.qvalue_target`.
What differs is only the scheduling:

* **one fused backward for the critic and the diffusion model.** The critic loss (``loss_qvalue + loss_value``) and
  the behaviour-cloning loss share no parameter, so ``backward(loss_qvalue + loss_value + loss_diffusion)`` gives
  every parameter exactly the gradient of its own loss. The actor still runs after both steps: it must see the
  critic and the diffusion model that were just updated (the reference order).
* **one twin-Q forward instead of two.** The value regression reads ``min_i Q_i(s, a)`` with the Q weights frozen;
  those are the detached values of the Q forward that the Q regression already made (same weights, same inputs).
* **no TensorDict plumbing in the hot path.** The networks are private copies of the loss's modules that hold the
  loss's own parameter tensors (the very ``nn.Parameter`` objects the optimizers step, or detached aliases of them
  for the frozen uses), called directly on tensors. The twin Q runs as a loop of two ``addmm`` chains in eager mode
  and as one ``torch.vmap`` when compiled (whichever is faster there).
* **a cheaper Mish.** In those private copies Mish is computed from one ``exp`` with a hand-written backward
  (:class:`~torchrl_dtql.modules.fast_mish.ExpMish`): on CPUs with a slow vectorised ``tanh`` ATen's Mish costs as
  much as the matmuls.
* **no host syncs.** The loss's finiteness checks (one device-to-host sync per checked tensor) run on the first batch
  only; then nothing in the step reads a value back.
* **optional** ``torch.compile`` of the two loss computations (forward and backward) and **CUDA graphs**
  (:class:`tensordict.nn.CudaGraphModule`) around the whole step, optimizer steps and target update included.

Gradients, losses and random draws match :func:`~torchrl_dtql.dtql_update_step` up to float rounding (the tests
check parameters after several steps). Two named options change the arithmetic on purpose: ``fast_activations``
(the Mish above: the same function to within float rounding; ``False`` keeps ATen's) and ``sigma_sampling_dtype``
(float32 noise levels draw from a different random stream than the reference's float64 ones, the same law).

Examples:
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
    >>> update = make_dtql_update_fn(loss, make_dtql_optimizers(loss, fused=True))
    >>> type(update).__name__
    'DTQLUpdater'
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import CudaGraphModule
from torch import Tensor
from torchrl.objectives.utils import TargetNetUpdater

from torchrl_dtql.modules.bound_networks import bind_parameters, ensemble_values
from torchrl_dtql.modules.edm import LogLogisticSigmaSampler
from torchrl_dtql.modules.fast_mish import replace_mish_
from torchrl_dtql.modules.inductor import make_inductor_backend
from torchrl_dtql.objectives import terms
from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.optimizers import alpha_step, check_alpha_optimizer, DTQLOptimizers

__all__ = ["DTQLUpdater", "make_dtql_update_fn"]


def _stacked_parameters(params: TensorDictBase, *, frozen: bool) -> dict[str, Tensor]:
    """``{"net.0.weight": [E, ...], ...}`` for ``torch.func.functional_call`` on the inner module of an ensemble."""
    out = {}
    for key, value in params.items(include_nested=True, leaves_only=True):
        if key[0] != "module":
            raise KeyError(f"Expected Q-ensemble parameters under 'module', got {key!r}.")
        out[".".join(key[1:])] = value.detach() if frozen else value
    return out


class DTQLUpdater:
    """One DTQL training step, as :func:`~torchrl_dtql.dtql_update_step` but fused, sync-free and compilable.

    Main phase: the diffusion and critic losses on the batch, one backward for both, the critic and diffusion
    optimizer steps; then the actor loss with the critic and the diffusion model just updated, its backward and
    step (with ``auto_alpha="q_scale"`` alpha is first set from the critic's Q of the batch,
    :meth:`~torchrl_dtql.DTQLLoss.scale_alpha_`); with ``auto_alpha="multiplier"`` the multiplier's step
    (:func:`~torchrl_dtql.objectives.optimizers.alpha_step`); then ``target_updater.step()``. Pretraining
    (``pretrain=True``): the first half only, no target update, as the reference. Random draws happen in the
    reference order (BC noise level and noise, then the policy's sample, then the trust-region noise level and
    noise), so with the same seed both paths draw the same numbers.

    The updater holds references to the loss's parameters: build it after the loss has been moved to its device,
    and keep using the optimizers it was given. The loss itself is not modified.

    Args:
        loss: the :class:`~torchrl_dtql.DTQLLoss` (``reduction`` ``"mean"`` or ``"sum"``; the value estimator must
            accept a precomputed ``next_value``, as TorchRL's TD0 does).
        optimizers: the three optimizers of :func:`~torchrl_dtql.make_dtql_optimizers`. ``fused=True`` (CPU and
            CUDA) makes each optimizer step one kernel; CUDA graphs need ``capturable=True``.

    Keyword Args:
        target_updater: e.g. ``SoftUpdate(loss, tau=0.005)``, stepped after each main-phase step.
        compile: ``torch.compile`` the two loss computations (their backward is compiled with them). The compiled
            code keeps only tensor guards (shapes, dtypes, devices): it assumes the loss's configuration
            (``reduction``, keys, estimator) does not change after the updater is built. Coefficients stored as
            tensors (``alpha``, ``gamma_nll``, ``expectile``, the discount) may change: they are read at run time.
        compile_mode: the ``torch.compile`` mode (``None``: the default mode).
        fast_activations: compute Mish from one ``exp`` in the updater's copies of the networks
            (:class:`~torchrl_dtql.modules.fast_mish.ExpMish`; the same function up to float rounding).
        cudagraphs: capture the whole step in a CUDA graph (:class:`tensordict.nn.CudaGraphModule`) after
            ``warmup`` eager calls. CUDA only; batches must keep their shape and device.
        warmup: eager calls per mode before the CUDA graph is captured.
        sigma_sampling_dtype: precision of the noise-level sampler; ``None`` keeps the diffusion model's own
            (float64 in the reference). ``torch.float32`` avoids float64 kernels on GPUs but draws a different random
            stream, so results are then equal in law, not number for number.
        validate: check the first batch with the loss's own input checks (keys, shapes, finiteness; a host sync),
            then never again.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> update = DTQLUpdater(loss, make_dtql_optimizers(loss, fused=True))
        >>> batch = TensorDict(observation=torch.randn(4, 3), action=torch.zeros(4, 2), next=TensorDict(
        ...     observation=torch.randn(4, 3), reward=torch.ones(4, 1), done=torch.zeros(4, 1, dtype=torch.bool),
        ...     terminated=torch.zeros(4, 1, dtype=torch.bool), batch_size=[4]), batch_size=[4])
        >>> sorted(update(batch, pretrain=True).keys())
        ['loss_diffusion', 'loss_qvalue', 'loss_value', 'pred_value']
        >>> out = update(batch)
        >>> out["loss_actor"].shape
        torch.Size([])
    """

    def __init__(
        self,
        loss: DTQLLoss,
        optimizers: DTQLOptimizers,
        *,
        target_updater: TargetNetUpdater | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
        fast_activations: bool = True,
        cudagraphs: bool = False,
        warmup: int = 2,
        sigma_sampling_dtype: torch.dtype | None = None,
        validate: bool = True,
    ) -> None:
        if loss.reduction not in ("mean", "sum"):
            raise ValueError("DTQLUpdater needs a scalar loss: build DTQLLoss with reduction='mean' or 'sum'.")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}.")
        check_alpha_optimizer(loss, optimizers)
        self.loss = loss
        self.optimizers = optimizers
        self.target_updater = target_updater
        self.validate = validate
        self._batch_keys: list | None = None
        self._bind_networks(loss, fast_activations=fast_activations)
        self._sigma_sampler = self._make_sigma_sampler(sigma_sampling_dtype)

        self._critic_and_diffusion = self._critic_and_diffusion_losses
        self._actor = self._actor_losses
        if compile:
            # Only tensor guards: the updater's modules are private and never change, and every batch is reduced to
            # the same entries, so the (costly) guards on modules and on the batch structure would never fail.
            kwargs = {
                "backend": make_inductor_backend(mode=compile_mode),
                "dynamic": False,
                "options": {"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe},
            }
            self._critic_and_diffusion = torch.compile(self._critic_and_diffusion_losses, **kwargs)
            self._actor = torch.compile(self._actor_losses, **kwargs)
        self._steps: dict[bool, Callable[[TensorDictBase], TensorDictBase]] = {
            pretrain: self._make_step(pretrain) for pretrain in (False, True)
        }
        if cudagraphs:
            self._check_capturable(optimizers)
            self._steps = {
                pretrain: CudaGraphModule(step, in_keys=[], out_keys=[], warmup=warmup)
                for pretrain, step in self._steps.items()
            }

    # ------------------------------------------------------------------ set-up
    def _bind_networks(self, loss: DTQLLoss, *, fast_activations: bool) -> None:
        """Private copies of the loss's networks holding its parameters (trainable) or aliases of them (frozen)."""
        activations = replace_mish_ if fast_activations else (lambda module: module)
        self._value = activations(bind_parameters(loss.value_network, loss.value_network_params, frozen=False).module)
        self._target_value = activations(
            bind_parameters(loss.value_network, loss.target_value_network_params, frozen=True).module
        )
        diffusion_params = loss.diffusion_network_params
        self._diffusion = activations(bind_parameters(loss.diffusion_network, diffusion_params, frozen=False).module)
        self._frozen_diffusion = activations(
            bind_parameters(loss.diffusion_network, diffusion_params, frozen=True).module
        )
        self._actor_network = activations(bind_parameters(loss.actor_network, loss.actor_network_params, frozen=False))
        # called functionally with the stacked ensemble parameters: a parameter-free (meta) copy
        self._qvalue_module = activations(copy.deepcopy(loss.qvalue_network.module).to("meta"))
        self._qvalue_params = _stacked_parameters(loss.qvalue_network_params, frozen=False)
        self._frozen_qvalue_params = _stacked_parameters(loss.qvalue_network_params, frozen=True)
        self._qvalue_in_keys = list(loss.qvalue_network.in_keys)
        self._value_in_keys = list(loss.value_network.in_keys)
        self._vmap_randomness = loss.vmap_randomness

    def _make_sigma_sampler(self, dtype: torch.dtype | None) -> LogLogisticSigmaSampler | None:
        if dtype is None:
            return None
        sampler = self._diffusion.sigma_sampler
        return LogLogisticSigmaSampler(
            loc=sampler.loc, scale=sampler.scale, sigma_min=sampler.sigma_min, sigma_max=sampler.sigma_max, dtype=dtype
        )

    @staticmethod
    def _check_capturable(optimizers: DTQLOptimizers) -> None:
        for name, optimizer in optimizers.present().items():
            if not all(group.get("capturable", False) for group in optimizer.param_groups):
                raise ValueError(
                    f"cudagraphs=True needs capturable optimizers; the {name} optimizer is not. Build them with "
                    "make_dtql_optimizers(loss, capturable=True, fused=True) on the CUDA device."
                )

    # ------------------------------------------------------------------ the networks on tensors
    def _qvalues(self, params: dict[str, Tensor], inputs: dict[str, Tensor]) -> Tensor:
        """``[E, *B]`` values of the whole Q ensemble: one vmapped call when compiled, a loop in eager mode."""
        args = [inputs[key] for key in self._qvalue_in_keys]
        loop = not torch.compiler.is_compiling()
        values = ensemble_values(self._qvalue_module, params, args, loop=loop, randomness=self._vmap_randomness)
        return values.squeeze(-1)

    def _noise_levels(self, action: Tensor) -> Tensor | None:
        """The EDM noise levels ``[*B, 1]`` from ``sigma_sampling_dtype``'s sampler; ``None``: the model draws them."""
        if self._sigma_sampler is None:
            return None
        return self._sigma_sampler((*action.shape[:-1], 1), device=action.device, dtype=action.dtype)

    # ------------------------------------------------------------------ the losses (compiled with compile=True)
    def _critic_and_diffusion_losses(self, batch: TensorDictBase) -> dict[str, Tensor]:
        """``loss_qvalue``, ``loss_value`` and ``loss_diffusion`` as the loss's methods compute them, one Q forward."""
        loss = self.loss
        action = batch.get(loss.tensor_keys.action)
        observation = batch.get(loss.observation_key)
        # the reference draws the BC noise before the actor's, and the critic draws nothing
        bc = terms.behaviour_cloning_loss(self._diffusion, action, observation, sigma=self._noise_levels(action))
        loss_diffusion = loss.reduce(bc, batch)

        with torch.no_grad():
            next_value = self._target_value(*[batch.get(("next", key)) for key in self._value_in_keys])
        target_value = loss.qvalue_target(batch, next_value=next_value)
        q_values = self._qvalues(self._qvalue_params, {key: batch.get(key) for key in self._qvalue_in_keys})
        loss_qvalue = loss.reduce(terms.qvalue_regression_loss(q_values, target_value, loss.loss_function), batch)

        # V regresses on min_i Q_i(s, a) with Q frozen: the term detaches the values of the forward above
        value = self._value(*[batch.get(key) for key in self._value_in_keys]).squeeze(-1)
        loss_value = loss.reduce(terms.value_regression_loss(q_values, value, loss.expectile), batch)
        return {
            "loss_qvalue": loss_qvalue,
            "loss_value": loss_value,
            "loss_diffusion": loss_diffusion,
            "pred_value": terms.mean_qvalue(q_values).mean(),
        }

    def _actor_losses(self, batch: TensorDictBase) -> dict[str, Tensor]:
        """``loss_actor`` and its diagnostics as :meth:`~torchrl_dtql.DTQLLoss.actor_loss` computes them."""
        loss = self.loss
        dist = self._actor_network.get_dist(batch.select(*self._actor_network.in_keys, strict=False))
        action_pi = dist.rsample()
        observation = batch.get(loss.observation_key)
        trust_region = terms.trust_region_loss(
            self._frozen_diffusion, action_pi, observation, sigma=self._noise_levels(action_pi)
        )
        q_inputs = {key: batch.get(key) for key in self._qvalue_in_keys}
        q_inputs[loss.tensor_keys.action] = action_pi
        min_q = terms.ensemble_min(self._qvalues(self._frozen_qvalue_params, q_inputs))
        nll = terms.dataset_action_nll(dist, batch.get(loss.tensor_keys.action), loss.nll_atanh_eps)
        objective = terms.actor_objective(trust_region, min_q, nll, alpha=loss.alpha, gamma_nll=loss.gamma_nll)
        return {
            "loss_actor": loss.reduce(objective, batch),
            "trust_region": trust_region.detach().mean(),
            "min_q_actor": min_q.detach().mean(),
            "nll_data": nll.detach().mean(),
            "policy_std": terms.policy_scale(dist).mean(),
        }

    # ------------------------------------------------------------------ the step
    def _make_step(self, pretrain: bool) -> Callable[[TensorDictBase], TensorDictBase]:
        optimizers = self.optimizers

        def step(batch: TensorDictBase) -> TensorDictBase:
            optimizers.critic.zero_grad(set_to_none=True)
            optimizers.diffusion.zero_grad(set_to_none=True)
            out = self._critic_and_diffusion(batch)
            # disjoint parameters: the summed backward gives each part the gradient of its own loss
            (out["loss_qvalue"] + out["loss_value"] + out["loss_diffusion"]).backward()
            optimizers.critic.step()
            optimizers.diffusion.step()
            if not pretrain:
                if self.loss.auto_alpha == "q_scale":  # this step's alpha, from the critic's Q of the batch's actions
                    self.loss.scale_alpha_(out["pred_value"])
                    out["alpha"] = self.loss.alpha.detach().clone()
                optimizers.actor.zero_grad(set_to_none=True)
                actor_out = self._actor(batch)
                actor_out["loss_actor"].backward()
                optimizers.actor.step()
                if optimizers.alpha is not None:  # alpha="auto": the multiplier's step
                    actor_out.update(
                        alpha_step(self.loss, optimizers.alpha, actor_out["trust_region"], out["loss_diffusion"],
                                   actor_out["min_q_actor"])
                    )
                if self.target_updater is not None:
                    self.target_updater.step()
                out.update(actor_out)
            return TensorDict(out).detach()

        return step

    def _batch_keys_of(self, batch: TensorDictBase) -> list:
        """The entries a step reads: the loss's in_keys, plus priority weights and loss masks if the batch has them."""
        loss = self.loss
        present = set(batch.keys(include_nested=True))
        optional = [key for key in loss.reduction_in_keys() if key in present]
        return list(dict.fromkeys([*loss.in_keys, *optional]))

    def __call__(self, batch: TensorDictBase, pretrain: bool = False) -> TensorDictBase:
        """One update on ``batch``; returns the detached losses and diagnostics, like ``dtql_update_step``."""
        pretrain = bool(pretrain)
        if self._batch_keys is None:  # the first batch fixes the entries read (and is checked if ``validate``)
            if self.validate:
                self.loss.check_inputs(batch)
            self._batch_keys = self._batch_keys_of(batch)
        # always the same structure: compiled code and CUDA graphs see the entries they were built for
        return self._steps[pretrain](batch.select(*self._batch_keys))


def make_dtql_update_fn(
    loss: DTQLLoss,
    optimizers: DTQLOptimizers,
    *,
    target_updater: TargetNetUpdater | None = None,
    compile: bool = False,
    cudagraphs: bool = False,
    **kwargs,
) -> DTQLUpdater:
    """``update(batch, pretrain=False) -> TensorDict``: the fast DTQL step (see :class:`DTQLUpdater` for options).

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> update = make_dtql_update_fn(loss, make_dtql_optimizers(loss, fused=True))
        >>> callable(update)
        True
    """
    return DTQLUpdater(
        loss, optimizers, target_updater=target_updater, compile=compile, cudagraphs=cudagraphs, **kwargs
    )
