"""EDM (Karras et al., 2022) maths for action diffusion: preconditioning, sigma sampling, schedules, solvers.

Everything here is a pure function of tensors; the networks live in :mod:`torchrl_dtql.modules.denoiser` and the
TensorDict wrapper in :mod:`torchrl_dtql.modules.actors`. Names follow the EDM paper (Table 1 and Algorithm 1):
``c_skip``, ``c_out``, ``c_in``, ``c_noise``, ``sigma_data``.

The diffusion is variance exploding: ``x_noisy = x + sigma * eps`` and the denoiser is

.. math::

    D(x, s, \\sigma) = c_{skip}(\\sigma) x + c_{out}(\\sigma) F_\\theta(c_{in}(\\sigma) x, s, c_{noise}(\\sigma)).

Examples:
    >>> import torch
    >>> sigma = torch.tensor([0.5])
    >>> c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data=0.5)
    >>> float(c_skip), round(float(c_noise), 4)
    (0.5, -0.1733)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "EDMConfig",
    "LogLogisticSigmaSampler",
    "edm_preconditioning",
    "edm_loss_weight",
    "karras_sigmas",
    "edm_sample",
]

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0


@dataclass(frozen=True)
class EDMConfig:
    """The constants of the EDM parameterisation (DTQL reference defaults).

    Args:
        sigma_data: the assumed standard deviation of the clean actions.
        sigma_min: the smallest noise level (training truncation and sampling end point).
        sigma_max: the largest noise level (training truncation and sampling start point).
    """

    sigma_data: float = SIGMA_DATA
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"EDMConfig needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}."
            )
        if self.sigma_data <= 0:
            raise ValueError(f"EDMConfig needs sigma_data > 0, got {self.sigma_data}.")


def edm_preconditioning(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four EDM preconditioning coefficients for noise level(s) ``sigma``.

    Args:
        sigma: noise levels, any shape (broadcast against the actions by the caller).
        sigma_data: the data standard deviation.

    Returns:
        ``(c_skip, c_out, c_in, c_noise)`` with ``c_skip = sd^2 / (sigma^2 + sd^2)``,
        ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``, ``c_in = 1 / sqrt(sigma^2 + sd^2)`` and
        ``c_noise = ln(sigma) / 4``.

    Examples:
        >>> sigma = torch.tensor(1.0)
        >>> c_skip, c_out, c_in, _ = edm_preconditioning(sigma, 0.5)
        >>> bool(torch.isclose(c_out**2, sigma**2 * c_skip)), bool(torch.isclose(c_in**2 * (sigma**2 + 0.25), torch.tensor(1.0)))
        (True, True)
    """
    sd2 = sigma_data**2
    total = sigma**2 + sd2
    c_skip = sd2 / total
    c_out = sigma * sigma_data * total.rsqrt()
    c_in = total.rsqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> Tensor:
    """The EDM loss weight ``lambda(sigma) = 1 / c_out^2 = (sigma^2 + sd^2) / (sigma sd)^2``.

    Examples:
        >>> float(edm_loss_weight(torch.tensor(0.5), 0.5))
        8.0
    """
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class LogLogisticSigmaSampler:
    """Truncated log-logistic noise levels, as the DTQL reference samples them for training.

    ``ln(sigma)`` follows a logistic law with location ``ln(sigma_data)`` and scale ``0.5``, truncated to
    ``[sigma_min, sigma_max]``, drawn by inverse-CDF sampling. The median is ``sigma_data`` (0.5) and about 90%
    of the mass lies in ``[0.11, 2.24]``.

    Args:
        loc: location of ``ln(sigma)``. Defaults to ``ln(0.5)``.
        scale: scale of ``ln(sigma)``. Defaults to ``0.5``.
        sigma_min: lower truncation.
        sigma_max: upper truncation.
        dtype: the precision of the inverse-CDF arithmetic. The reference uses float64 (the default here, for
            parity); float32 draws from the same law to within rounding and avoids float64 kernels on GPUs.

    Examples:
        >>> sampler = LogLogisticSigmaSampler()
        >>> sigma = sampler((100_000,), generator=torch.Generator().manual_seed(0))
        >>> round(float(sigma.median()), 2)
        0.5
    """

    def __init__(
        self,
        loc: float = math.log(SIGMA_DATA),
        scale: float = 0.5,
        sigma_min: float = SIGMA_MIN,
        sigma_max: float = SIGMA_MAX,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"LogLogisticSigmaSampler needs scale > 0, got {scale}.")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"LogLogisticSigmaSampler needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
        self.loc = loc
        self.scale = scale
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.dtype = dtype
        self.cdf_min = self.cdf(sigma_min)
        self.cdf_max = self.cdf(sigma_max)

    def cdf(self, sigma: float) -> float:
        """The (untruncated) CDF ``F(sigma) = sigmoid((ln sigma - loc) / scale)``."""
        return 1.0 / (1.0 + math.exp(-(math.log(sigma) - self.loc) / self.scale))

    def __call__(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws noise levels of the given shape, returned in ``dtype``."""
        u = torch.rand(shape, device=device, dtype=self.dtype, generator=generator)
        u = u * (self.cdf_max - self.cdf_min) + self.cdf_min
        sigma = (self.loc + self.scale * torch.logit(u)).exp()
        return sigma.to(dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(loc={self.loc:.4f}, scale={self.scale}, sigma_min={self.sigma_min}, "
            f"sigma_max={self.sigma_max}, dtype={self.dtype})"
        )


def karras_sigmas(
    num_steps: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = 7.0,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """The Karras et al. (2022, eq. 5) sampling schedule, from ``sigma_max`` down to ``sigma_min``, then 0.

    Returns ``num_steps + 1`` noise levels; the last one is exactly 0.

    Examples:
        >>> s = karras_sigmas(5)
        >>> s.shape, float(s[0]), round(float(s[-2]), 3), float(s[-1])
        (torch.Size([6]), 80.0, 0.002, 0.0)
    """
    if num_steps < 1:
        raise ValueError(f"karras_sigmas needs num_steps >= 1, got {num_steps}.")
    if num_steps == 1:
        ramp = torch.zeros(1, device=device, dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, num_steps, device=device, dtype=torch.float64)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def edm_sample(
    denoise: Callable[[Tensor, Tensor], Tensor],
    x_init: Tensor,
    sigmas: Tensor,
    solver: str = "heun",
) -> Tensor:
    """Integrates the EDM probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` (EDM Algorithm 1).

    Args:
        denoise: ``denoise(x, sigma) -> D(x, sigma)`` with ``sigma`` a scalar tensor.
        x_init: the starting point, already scaled by ``sigmas[0]`` (``sigma_max * eps``).
        sigmas: the decreasing schedule of :func:`karras_sigmas`, ending with 0.
        solver: ``"euler"`` (one denoiser call per step) or ``"heun"`` (second-order correction on every step but
            the last: ``2 * num_steps - 1`` calls).

    Examples:
        >>> # with a perfect denoiser for a point mass at 0.3 the sampler lands on 0.3
        >>> x = edm_sample(lambda x, s: torch.full_like(x, 0.3), torch.randn(4, 2) * 80, karras_sigmas(3))
        >>> bool(torch.allclose(x, torch.full_like(x, 0.3)))
        True
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"Unknown EDM solver {solver!r}: choose 'euler' or 'heun'.")
    x = x_init
    num_steps = sigmas.numel() - 1
    for i in range(num_steps):
        sigma_cur, sigma_next = sigmas[i], sigmas[i + 1]
        d_cur = (x - denoise(x, sigma_cur)) / sigma_cur
        x_next = x + (sigma_next - sigma_cur) * d_cur  # Euler step
        if solver == "heun" and i < num_steps - 1:  # 2nd order correction (skipped when sigma_next == 0)
            d_prime = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x
