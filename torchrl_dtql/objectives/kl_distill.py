"""``KLDistillLoss``: the DQL-KL baseline of the DTQL paper, KL (DMD-style score) distillation of the diffusion model.

DTQL regularises its one-step policy with the diffusion *trust-region* loss. The paper's KL baseline instead
distils the behaviour diffusion model into a one-step implicit generator by minimising ``KL(p_G || p_data)``
through score distillation (DMD, Yin et al. 2024): the KL gradient with respect to a generated action is the
difference of two scores, the behaviour model's ("real") and that of a "fake" diffusion model fitted to the
generator's own samples. The critic and the behaviour model are trained exactly as in DTQL.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict import TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from torch import Tensor
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate
from torchrl.objectives.utils import _cache_values

from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor
from torchrl_dtql.objectives import terms
from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.optimizers import (
    adam_options,
    CRITIC_LR,
    DTQLOptimizers,
    make_dtql_optimizers,
    trainable_parameters,
)
from torchrl_dtql.objectives.update import dtql_update_step

__all__ = ["KLDistillLoss", "KLDistillOptimizers", "make_kl_distill_optimizers", "kl_distill_update_step"]

DMD_NORMALIZER_EPS = 1e-8  # keeps the per-sample DMD normaliser mean|a - D_real| away from 0

_PARAM_NAMES = (
    "actor_network_params",
    "diffusion_network_params",
    "fake_score_network_params",
    "qvalue_network_params",
    "value_network_params",
    "target_actor_network_params",
    "target_diffusion_network_params",
    "target_fake_score_network_params",
    "target_qvalue_network_params",
    "target_value_network_params",
)


class KLDistillLoss(DTQLLoss):
    r"""DQL-KL: a one-step generator distilled from the behaviour diffusion model by score distillation, plus Q.

    The reference is ``agents/dql_kl.py`` / ``toy_tasks/toy_main.py --actor implicit --distill_loss dmd`` of
    ``TianyuCodings/Diffusion_Trusted_Q_Learning``. It shares everything with :class:`~torchrl_dtql.DTQLLoss` but
    the actor term; on a batch with states ``s`` and generated actions ``a = G(z, s)``:

    .. math::

        x &= a + \sigma \epsilon, \quad \sigma \sim \text{log-logistic}, \ \epsilon \sim N(0, I)
            \quad \text{(shared by both models)} \\
        g &= \frac{D_{fake}(x, s, \sigma) - D_{real}(x, s, \sigma)}{\overline{|a - D_{real}(x, s, \sigma)|}}
            \quad \text{(no gradient)} \\
        L_{KL} &= \tfrac{1}{2}\,\overline{(a - \mathrm{sg}[a - g])^2}, \qquad
            \nabla_a L_{KL} \propto g \approx \nabla_a \mathrm{KL}(p_G \,\|\, p_{data}) \\
        L_G &= \alpha\, L_{KL} - \min_i Q_i(s, a) \\
        L_{fake} &= L_{BC}(D_{fake}; \mathrm{sg}[a])

    where :math:`D_{real}` is the behaviour model (:meth:`diffusion_loss` trains it on dataset actions, as in DTQL;
    :math:`L_{KL}` never updates it), :math:`D_{fake}` a second diffusion model fitted to the generator's samples
    by :meth:`fake_score_loss`, and the bars are means over action dimensions. :meth:`actor_loss` (the generator
    loss) moves only the generator; :meth:`fake_score_loss` only the fake-score model.

    The reference fits the fake score on the very samples the generator step used; here
    :meth:`fake_score_loss` draws fresh samples from the generator (a pure loss keeps no state between calls).
    The toy reference writes the generator loss as ``L_KL + eta * L_Q``, i.e. ``alpha = 1 / eta`` up to a
    scale that Adam ignores. There is no ``gamma_nll`` term: an implicit generator has no density.

    Args:
        actor_network: the generator (:func:`~torchrl_dtql.modules.generator.make_one_step_generator`).
        diffusion_network: the behaviour (real-score) :class:`~torchrl_dtql.EDMDiffusionActor`.
        qvalue_network: a Q ``ValueOperator`` or a list of them (as in :class:`~torchrl_dtql.DTQLLoss`).
        value_network: the state-value ``ValueOperator``.

    Keyword Args:
        fake_score_network: the fake-score :class:`~torchrl_dtql.EDMDiffusionActor`, with the same EDM constants
            and clamp as ``diffusion_network`` (the D4RL reference initialises it from the pretrained behaviour
            model: see :meth:`copy_diffusion_to_fake_score`).
        alpha: weight of the distillation term.
        expectile, num_qvalue_nets, loss_function, check_finite, reduction, deactivate_vmap: as in
            :class:`~torchrl_dtql.DTQLLoss`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_dtql import make_dtql_modules
        >>> from torchrl_dtql.modules.generator import make_one_step_generator
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> modules = make_dtql_modules(3, spec, hidden_dim=16)
        >>> fake = make_dtql_modules(3, spec, hidden_dim=16)["diffusion_network"]
        >>> modules["actor_network"] = make_one_step_generator(3, spec, hidden_dim=16)
        >>> loss = KLDistillLoss(**modules, fake_score_network=fake, alpha=1.0)
        >>> data = TensorDict(
        ...     observation=torch.randn(8, 3),
        ...     action=torch.rand(8, 2) * 2 - 1,
        ...     next=TensorDict(
        ...         observation=torch.randn(8, 3),
        ...         reward=torch.randn(8, 1),
        ...         done=torch.zeros(8, 1, dtype=torch.bool),
        ...         terminated=torch.zeros(8, 1, dtype=torch.bool),
        ...         batch_size=[8],
        ...     ),
        ...     batch_size=[8],
        ... )
        >>> sorted(k for k in loss(data).keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_diffusion', 'loss_fake_score', 'loss_qvalue', 'loss_value']
    """

    #: DTQL's parameter sets plus the fake-score model's (and its target).
    param_names = _PARAM_NAMES

    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "loss_diffusion",
        "loss_fake_score",
        "distill",
        "min_q_actor",
        "distill_grad_norm",
        "pred_value",
        "target_value",
    ]

    fake_score_network: EDMDiffusionActor
    fake_score_network_params: TensorDictParams
    target_fake_score_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        diffusion_network: EDMDiffusionActor,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        *,
        fake_score_network: EDMDiffusionActor,
        alpha: float = 1.0,
        expectile: float = 0.7,
        num_qvalue_nets: int = 2,
        loss_function: str = "l2",
        check_finite: bool = True,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
    ) -> None:
        super().__init__(
            actor_network,
            diffusion_network,
            qvalue_network,
            value_network,
            alpha=alpha,
            gamma_nll=0.0,
            expectile=expectile,
            num_qvalue_nets=num_qvalue_nets,
            loss_function=loss_function,
            check_finite=check_finite,
            reduction=reduction,
            deactivate_vmap=deactivate_vmap,
        )
        self._check_fake_score(diffusion_network, fake_score_network)
        self.convert_to_functional(fake_score_network, "fake_score_network", create_target_params=False)

    @staticmethod
    def _check_fake_score(diffusion_network: EDMDiffusionActor, fake_score_network: EDMDiffusionActor) -> None:
        real, fake = diffusion_network.module, getattr(fake_score_network, "module", None)
        if not callable(getattr(fake, "denoise", None)):
            raise TypeError(
                "fake_score_network must be an EDMDiffusionActor (a module whose `.module.denoise` is the EDM "
                f"denoiser), got {type(fake_score_network).__name__}."
            )
        if fake.edm != real.edm or fake.clip_denoised != real.clip_denoised:
            raise ValueError(
                "The fake-score and behaviour diffusion models must share the EDM constants and the clamp: got "
                f"{fake.edm}, clip_denoised={fake.clip_denoised} against {real.edm}, "
                f"clip_denoised={real.clip_denoised}."
            )

    @property
    @_cache_values
    def _cached_detach_fake_score_params(self) -> TensorDictBase:
        return self.fake_score_network_params.detach()

    def copy_diffusion_to_fake_score(self) -> None:
        """Copies the behaviour model's weights into the fake-score model (``agents/dql_kl.py`` does so after
        pretraining). Both must have the same architecture."""
        with torch.no_grad():
            self.fake_score_network_params.data.copy_(self.diffusion_network_params.data)

    def copy_diffusion_to_generator(self) -> None:
        """Copies the behaviour model's denoiser weights into the generator's backbone, as ``agents/dql_kl.py`` does
        after pretraining. The generator must be a :class:`~torchrl_dtql.modules.generator.OneStepGenerator` whose
        backbone has the denoiser's architecture (same sizes)."""
        generator = self.actor_network_params.get(("module", "backbone"), None)
        denoiser = self.diffusion_network_params.get(("module", "denoiser"), None)
        if generator is None or denoiser is None:
            raise TypeError(
                "copy_diffusion_to_generator needs a OneStepGenerator actor (parameters under module.backbone) and "
                "an EDMDiffusionActor behaviour model (module.denoiser)."
            )
        generator_shapes = {k: v.shape for k, v in generator.items(True, True)}
        denoiser_shapes = {k: v.shape for k, v in denoiser.items(True, True)}
        if generator_shapes != denoiser_shapes:
            raise ValueError(
                "The generator's backbone and the behaviour model's denoiser differ in architecture; build them with "
                "the same hidden size, number of layers and time-embedding size."
            )
        with torch.no_grad():
            generator.data.copy_(denoiser.data)

    # ------------------------------------------------------------------ generator samples and the DMD direction
    def _generate(self, tensordict: TensorDictBase) -> Tensor:
        """Reparameterised generator actions (fresh noise, whatever the ambient exploration type)."""
        actor_td = tensordict.select(*self.actor_network.in_keys, strict=False)
        with set_exploration_type(ExplorationType.RANDOM), self.actor_network_params.to_module(self.actor_network):
            actor_td = self.actor_network(actor_td)
        return actor_td.get(self.actor_network.out_keys[-1])

    @torch.no_grad()
    def dmd_direction(self, action: Tensor, observation: Tensor) -> Tensor:
        """``g = (D_fake(x) - D_real(x)) / mean_d |a - D_real(x)|`` at a shared ``x = a + sigma * eps``.

        Descending ``g`` moves ``a`` towards the behaviour model's density and away from the generator's own
        (the DMD estimate of the reverse-KL gradient). No gradient flows anywhere.
        """
        real = self.diffusion_network.module
        sigma = real.sigma_sampler((*action.shape[:-1], 1), device=action.device, dtype=action.dtype)
        noisy = action + sigma * torch.randn_like(action)
        with self._cached_detach_diffusion_params.to_module(self.diffusion_network):
            denoised_real = real.denoise(noisy, observation, sigma)
        with self._cached_detach_fake_score_params.to_module(self.fake_score_network):
            denoised_fake = self.fake_score_network.module.denoise(noisy, observation, sigma)
        normalizer = (action - denoised_real).abs().mean(-1, keepdim=True).clamp_min(DMD_NORMALIZER_EPS)
        return (denoised_fake - denoised_real) / normalizer

    # ------------------------------------------------------------------ the two new losses
    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The generator loss ``alpha * L_KL(a) - min_i Q_i(s, a)`` with ``a = G(z, s)``; moves the generator only.

        Returns the reduced loss and ``{"distill": [*B], "min_q_actor": [*B], "distill_grad_norm": [*B]}``.
        """
        self.check_inputs(tensordict, list(dict.fromkeys([*self.actor_network.in_keys, self.observation_key])))
        action = self._generate(tensordict)
        observation = tensordict.get(self.observation_key)

        direction = self.dmd_direction(action.detach(), observation)
        distill = 0.5 * (action - (action - direction).detach()).pow(2).mean(-1)

        q_td = tensordict.select(*self.qvalue_network.in_keys, strict=False).set(self.tensor_keys.action, action)
        q_td = self._vmap_qvalue_networkN0(q_td, self._cached_detach_qvalue_params)
        min_q = terms.ensemble_min(q_td.get(self.tensor_keys.state_action_value).squeeze(-1))

        loss = self.alpha * distill - min_q
        metadata = {
            "distill": distill.detach(),
            "min_q_actor": min_q.detach(),
            "distill_grad_norm": direction.norm(dim=-1),
        }
        loss = self.reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, metadata

    def fake_score_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The EDM denoising loss of the fake-score model on (detached) generator samples; moves it only."""
        self.check_inputs(tensordict, list(dict.fromkeys([*self.actor_network.in_keys, self.observation_key])))
        with torch.no_grad():
            action = self._generate(tensordict)
        observation = tensordict.get(self.observation_key)
        with self.fake_score_network_params.to_module(self.fake_score_network):  # a BC loss on generated actions
            loss = terms.behaviour_cloning_loss(self.fake_score_network.module, action, observation)
        loss = self.reduce(loss, tensordict)
        self._clear_weakrefs(tensordict, *self.param_names)
        return loss, {}

    # ------------------------------------------------------------------ forward
    def compute_losses(
        self, tensordict: TensorDictBase
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """DTQL's four losses plus ``loss_fake_score``: what the inherited ``forward`` returns, with the
        diagnostics. For the reference's sequential update use :func:`kl_distill_update_step`."""
        losses, metadata_q, metadata_actor = super().compute_losses(tensordict)
        losses["loss_fake_score"], _ = self.fake_score_loss(tensordict)
        return losses, metadata_q, metadata_actor


class KLDistillOptimizers(NamedTuple):
    """DTQL's three optimizers (critic, diffusion, actor = the generator) plus the fake-score model's."""

    critic: torch.optim.Optimizer
    diffusion: torch.optim.Optimizer
    actor: torch.optim.Optimizer
    fake_score: torch.optim.Optimizer

    def state_dict(self) -> dict[str, dict]:
        """All four optimizer states, for checkpoints."""
        return {name: optimizer.state_dict() for name, optimizer in self._asdict().items()}

    def load_state_dict(self, state_dict: dict[str, dict]) -> None:
        """Restores the states written by :meth:`state_dict`."""
        for name, optimizer in self._asdict().items():
            optimizer.load_state_dict(state_dict[name])

    def dtql(self) -> DTQLOptimizers:
        """The first three, as :func:`~torchrl_dtql.dtql_update_step` takes them."""
        return DTQLOptimizers(self.critic, self.diffusion, self.actor)


def make_kl_distill_optimizers(
    loss: KLDistillLoss,
    *,
    lr: float = 3e-4,
    actor_lr: float | None = None,
    diffusion_lr: float | None = None,
    fake_score_lr: float | None = None,
    critic_lr: float = CRITIC_LR,
    **adam_kwargs,
) -> KLDistillOptimizers:
    """One Adam per part: ``lr`` for the generator, the behaviour and the fake-score models; ``critic_lr`` (3e-4).

    The first three are :func:`~torchrl_dtql.make_dtql_optimizers`'s, and all four are fused by default
    (:func:`~torchrl_dtql.objectives.optimizers.adam_options`).

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_dtql import make_dtql_modules
        >>> from torchrl_dtql.modules.generator import make_one_step_generator
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> modules = make_dtql_modules(3, spec, hidden_dim=16)
        >>> modules["actor_network"] = make_one_step_generator(3, spec, hidden_dim=16)
        >>> loss = KLDistillLoss(**modules, fake_score_network=make_dtql_modules(3, spec, hidden_dim=16)["diffusion_network"])
        >>> make_kl_distill_optimizers(loss, lr=1e-3).fake_score.param_groups[0]["lr"]
        0.001
    """

    critic, diffusion, actor = make_dtql_optimizers(
        loss, lr=lr, actor_lr=actor_lr, diffusion_lr=diffusion_lr, critic_lr=critic_lr, **adam_kwargs
    )
    fake_score_params = trainable_parameters(loss.fake_score_network_params)
    fake_score = torch.optim.Adam(
        fake_score_params, lr=lr if fake_score_lr is None else fake_score_lr, **adam_options(fake_score_params, adam_kwargs)
    )
    return KLDistillOptimizers(critic=critic, diffusion=diffusion, actor=actor, fake_score=fake_score)


def kl_distill_update_step(
    loss: KLDistillLoss,
    optimizers: KLDistillOptimizers,
    batch: TensorDictBase,
    *,
    pretrain: bool = False,
    target_updater: SoftUpdate | None = None,
) -> TensorDictBase:
    """One DQL-KL step in the reference order: critic, behaviour model, generator (by
    :func:`~torchrl_dtql.dtql_update_step`), then the fake-score model; returns the detached losses.

    Pretraining (``pretrain=True``) is DTQL's: behaviour model and critic only.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_dtql import make_dtql_modules
        >>> from torchrl_dtql.modules.generator import make_one_step_generator
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> modules = make_dtql_modules(3, spec, hidden_dim=16)
        >>> modules["actor_network"] = make_one_step_generator(3, spec, hidden_dim=16)
        >>> loss = KLDistillLoss(**modules, fake_score_network=make_dtql_modules(3, spec, hidden_dim=16)["diffusion_network"])
        >>> batch = TensorDict(observation=torch.randn(4, 3), action=torch.zeros(4, 2), next=TensorDict(
        ...     observation=torch.randn(4, 3), reward=torch.ones(4, 1), done=torch.zeros(4, 1, dtype=torch.bool),
        ...     terminated=torch.zeros(4, 1, dtype=torch.bool), batch_size=[4]), batch_size=[4])
        >>> "loss_fake_score" in kl_distill_update_step(loss, make_kl_distill_optimizers(loss), batch).keys()
        True
    """
    out = dtql_update_step(loss, optimizers.dtql(), batch, pretrain=pretrain, target_updater=target_updater)
    if not pretrain:
        loss_fake_score, _ = loss.fake_score_loss(batch)
        optimizers.fake_score.zero_grad(set_to_none=True)
        loss_fake_score.backward()
        optimizers.fake_score.step()
        out.set("loss_fake_score", loss_fake_score.detach())
    return out
