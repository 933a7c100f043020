"""DDPM noise schedule and deterministic DDIM sampling for DreamRec, x0-parameterised.

The maths only: this object never holds or calls a network except through the ``denoise_fn`` handed to
:meth:`NoiseSchedule.sample`. References:

- DDPM: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (arXiv 2006.11239).
- DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models" (arXiv 2010.02502).
- Cosine schedule: Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models"
  (arXiv 2102.09672).
- Classifier-free guidance: Ho & Salimans 2022 (arXiv 2207.12598), in the x0 form DreamRec uses.

Timesteps are 0-based integer indices ``0 .. T-1``: index ``t`` here is step ``t + 1`` of the papers, so
``t = 0`` is the least noisy trained step and ``t = T - 1`` the noisiest. Training draws ``t`` uniformly from
that range and sampling starts at ``T - 1`` exactly, so no step is used at inference that was never trained.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

BetaSchedule = Literal["linear", "cosine", "exponential"]

_COSINE_S = 0.008  # Nichol & Dhariwal 2021, eq. 17 offset
_COSINE_MAX_BETA = 0.999  # Nichol & Dhariwal 2021, below eq. 17: clip betas to avoid a singularity at t = T


@dataclass(frozen=True)
class ScheduleConfig:
    num_steps: int = 2000  # T, the number of diffusion steps (paper: 2000)
    beta_schedule: BetaSchedule = "linear"  # how beta_t grows with t
    beta_start: float = 1e-4  # beta at t = 0 (linear, exponential); unused by cosine
    beta_end: float = 0.02  # beta at t = T - 1 (linear, exponential); unused by cosine

    def __post_init__(self) -> None:
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {self.num_steps!r}")
        if self.beta_schedule not in get_args(BetaSchedule):
            raise ValueError(
                f"beta_schedule must be one of {get_args(BetaSchedule)}, got {self.beta_schedule!r}"
            )
        if not (0.0 < self.beta_start < 1.0):
            raise ValueError(f"beta_start must lie in (0, 1), got {self.beta_start!r}")
        if not (0.0 < self.beta_end < 1.0):
            raise ValueError(f"beta_end must lie in (0, 1), got {self.beta_end!r}")
        if self.beta_start > self.beta_end:
            raise ValueError(
                "beta_start must be <= beta_end, got "
                f"beta_start={self.beta_start!r} > beta_end={self.beta_end!r}"
            )


def _make_betas(config: ScheduleConfig) -> np.ndarray:
    """beta_t for t = 0..T-1 in float64, shape (T,)."""
    T = config.num_steps
    if config.beta_schedule == "linear":
        # Ho et al. 2020, sec. 4: betas increase linearly from beta_1 to beta_T.
        return np.linspace(config.beta_start, config.beta_end, T, dtype=np.float64)
    elif config.beta_schedule == "cosine":
        # Nichol & Dhariwal 2021, eq. 17: abar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2,
        # beta_t = 1 - abar(t) / abar(t - 1) clipped at 0.999; index i here is the paper's t = i + 1.
        steps = np.arange(T + 1, dtype=np.float64)
        f = np.cos(((steps / T + _COSINE_S) / (1.0 + _COSINE_S)) * math.pi / 2.0) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], _COSINE_MAX_BETA)
    elif config.beta_schedule == "exponential":
        # Geometric spacing: beta_i = beta_start * (beta_end / beta_start) ** (i / (T - 1)).
        exponent = np.linspace(0.0, 1.0, T, dtype=np.float64)
        return config.beta_start * (config.beta_end / config.beta_start) ** exponent
    else:
        raise ValueError(f"unknown beta_schedule {config.beta_schedule!r}")


class NoiseSchedule:
    """DDPM forward process + deterministic DDIM sampling, x0-parameterised (the denoiser predicts x_0).

    Attributes ``betas``, ``alphas`` and ``alphas_cumprod`` are float32 tensors of shape (T,), computed in
    float64 first; ``to(device)`` moves them. Nothing here is trainable.
    """

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.num_steps = config.num_steps
        betas = _make_betas(config)  # (T,) float64
        alphas = 1.0 - betas  # alpha_t = 1 - beta_t (Ho et al. 2020, sec. 2)
        alphas_cumprod = np.cumprod(alphas)  # abar_t = prod_{s <= t} alpha_s (Ho et al. 2020, eq. 4)
        self.betas = torch.from_numpy(betas).to(torch.float32)
        self.alphas = torch.from_numpy(alphas).to(torch.float32)
        self.alphas_cumprod = torch.from_numpy(alphas_cumprod).to(torch.float32)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """Move the schedule tensors to ``device`` in place; returns self (like ``nn.Module.to``)."""
        self.betas = self.betas.to(device)
        self.alphas = self.alphas.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def _check_step(self, t: int, name: str) -> int:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not (0 <= t < self.num_steps):
            raise ValueError(f"{name} must be an integer in [0, {self.num_steps - 1}], got {t!r}")
        return int(t)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. 2020, eq. 4).

        x0, noise: (B, ...); t: (B,) integer indices in [0, T-1]. Returns x_t with the shape and dtype of x0.
        """
        if x0.shape != noise.shape:
            raise ValueError(
                f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}"
            )
        if t.dim() != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an integer tensor, got dtype {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(
                f"t must lie in [0, {self.num_steps - 1}], got values in [{int(t.min())}, {int(t.max())}]"
            )
        abar = self.alphas_cumprod.to(device=x0.device)[t.to(x0.device)].to(x0.dtype)  # (B,)
        abar = abar.reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1) to broadcast over trailing dims
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def sample_timesteps(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Training timesteps, uniform over 0..T-1 (Ho et al. 2020, Algorithm 1). Returns (batch,) int64."""
        if batch < 0:
            raise ValueError(f"batch must be >= 0, got {batch!r}")
        return torch.randint(
            0, self.num_steps, (batch,), generator=generator, device=device, dtype=torch.long
        )

    def inference_timesteps(self, num_inference_steps: int) -> Tensor:
        """Strided sub-sequence of steps for DDIM (Song et al. 2021, sec. 4.2), descending, int64.

        ``round(linspace(T - 1, 0, n))`` in exact integer arithmetic: starts at T - 1 (the noisiest trained
        step) and ends at 0. For n <= T the stride is >= 1, so the entries are unique.
        """
        T = self.num_steps
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not (1 <= n <= T):
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}")
        if n == 1:
            return torch.tensor([T - 1], dtype=torch.long)
        k = torch.arange(n - 1, -1, -1, dtype=torch.long)  # (n,) n-1 .. 0
        # round((T - 1) * k / (n - 1)), half up, without floating point.
        return (2 * (T - 1) * k + (n - 1)) // (2 * (n - 1))

    def ddim_step(self, x_t: Tensor, x0_pred: Tensor, t: int, t_prev: int | None) -> Tensor:
        """One deterministic DDIM step (eta = 0) from step t to t_prev < t (Song et al. 2021, eq. 12).

        eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t);
        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.
        ``t_prev=None`` marks the final step and returns ``x0_pred``.
        """
        t = self._check_step(t, "t")
        if x_t.shape != x0_pred.shape:
            raise ValueError(
                f"x_t and x0_pred must have the same shape, got {tuple(x_t.shape)} and {tuple(x0_pred.shape)}"
            )
        if t_prev is None:
            return x0_pred
        t_prev = self._check_step(t_prev, "t_prev")
        if t_prev >= t:
            raise ValueError(f"t_prev must be < t, got t={t}, t_prev={t_prev}")
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev])
        # Song et al. 2021, eq. 9 inverted: the noise implied by x_t and the predicted x_0.
        eps = (x_t - math.sqrt(abar_t) * x0_pred) / math.sqrt(1.0 - abar_t)
        return math.sqrt(abar_prev) * x0_pred + math.sqrt(1.0 - abar_prev) * eps

    def sample(
        self,
        denoise_fn: Callable[[Tensor, Tensor], Tensor],
        shape: tuple[int, ...],
        num_inference_steps: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Generate x_0 by deterministic DDIM from x_{T-1} ~ N(0, I) drawn with ``generator``.

        ``denoise_fn(x_t, t_batch)`` gets x_t of ``shape`` and t_batch of shape (shape[0],) int64 and returns
        the predicted x_0. Gradients are not disabled here; callers sampling at evaluation time should wrap
        this in ``torch.no_grad()`` / ``torch.inference_mode()``.
        """
        if len(shape) < 1:
            raise ValueError(f"shape must have a leading batch dimension, got {shape!r}")
        device = self.device if device is None else torch.device(device)
        timesteps = self.inference_timesteps(num_inference_steps).tolist()
        x_t = torch.randn(shape, generator=generator, device=device, dtype=dtype)  # (B, ...)
        x0_pred = x_t
        for i, t in enumerate(timesteps):
            t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)  # (B,)
            x0_pred = denoise_fn(x_t, t_batch)
            if x0_pred.shape != x_t.shape:
                raise ValueError(
                    f"denoise_fn must return shape {tuple(x_t.shape)}, got {tuple(x0_pred.shape)} at t={t}"
                )
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            x_t = self.ddim_step(x_t, x0_pred, t, t_prev)
        return x0_pred


def guided_x0(x0_cond: Tensor, x0_uncond: Tensor, w: float) -> Tensor:
    """Classifier-free guidance in x0 form (DreamRec; Ho & Salimans 2022, eq. 6 with x0 for eps).

    x0 = (1 + w) f(x_t, c, t) - w f(x_t, null, t); w = 0 returns the conditional prediction.
    """
    if x0_cond.shape != x0_uncond.shape:
        raise ValueError(
            "x0_cond and x0_uncond must have the same shape, "
            f"got {tuple(x0_cond.shape)} and {tuple(x0_uncond.shape)}"
        )
    return (1.0 + w) * x0_cond - w * x0_uncond
