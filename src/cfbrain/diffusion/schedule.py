"""Gaussian diffusion maths shared by every sampler: forward marginals, posteriors, DDPM and DDIM steps.

Index convention (the one MONAI, diffusers and the network's timestep input use):

* step index ``t`` in ``{0, ..., T-1}`` is the theses' step ``t + 1`` (thesis 000 Algorithm 1 and thesis 003
  Algorithm 2 count ``1..T``); ``alpha_bar(t)`` is the thesis' ``ᾱ_{t+1}``;
* a tensor "at level ``t``" has the marginal ``q(x_t | x_0)`` of thesis 000 eq. (2.2);
* level ``-1`` is clean data (``ᾱ = 1``), the target of the last reverse step. The network is never
  evaluated at level ``-1``.

Reverse steps go between two levels ``t > prev`` of a (possibly strided) timestep sequence, so every formula
uses the respaced quantities ``α_{t|prev} = ᾱ_t / ᾱ_prev`` and ``β_{t|prev} = 1 - α_{t|prev}``; with
``prev = t - 1`` these are the usual ``α_t`` and ``β_t`` and the steps equal MONAI's ``DDPMScheduler.step``
and ``DDIMScheduler.step``.

Images are ``(B, C, H, W)`` tensors in [-1, 1] (ARCHITECTURE.md contract 7); every function works on the
tensors' device and dtype.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Timestep = int | Tensor
ReverseVariance = Literal["small", "large"]


class NoiseSchedule:
    """Fixed forward-process variances ``β_1..β_T`` and the quantities derived from them.

    Args:
        num_train_steps: ``T``, the number of diffusion steps the network was trained with.
        kind: ``"linear"``: ``β`` linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020; both theses:
            1e-4 to 0.02, T = 1000); ``"cosine"``: Nichol & Dhariwal (2021) with offset ``cosine_offset``,
            ``β`` clipped at 0.999 (the same construction as MONAI's ``"cosine"`` schedule).
        beta_start, beta_end: end points of the linear schedule.
        cosine_offset: ``s`` of the cosine schedule.

    Values are kept in float64 on the CPU and cast to the sample's dtype and device when used.
    """

    def __init__(
        self,
        num_train_steps: int = 1000,
        kind: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_offset: float = 8e-3,
    ) -> None:
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        elif kind == "cosine":
            grid = torch.linspace(0, num_train_steps, num_train_steps + 1, dtype=torch.float64)
            f = torch.cos((grid / num_train_steps + cosine_offset) / (1 + cosine_offset) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(0.0, 0.999)
        else:
            raise ValueError(f"unknown schedule kind {kind!r}; expected 'linear' or 'cosine'")
        self.num_train_steps = num_train_steps
        self.kind = kind
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        # index t + 1 gives ᾱ at level t, with ᾱ = 1 at level -1 (clean data)
        self._alpha_bar_from_minus_one = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_train_steps={self.num_train_steps}, kind={self.kind!r})"

    # ----------------------------------------------------------------------------------------------------
    # scalars
    def alpha_bar(self, t: int) -> float:
        """``ᾱ`` at level ``t`` in ``{-1, ..., T-1}`` (1.0 at level -1)."""
        self._check_level(t)
        return float(self._alpha_bar_from_minus_one[t + 1])

    def _alpha_bar_like(self, t: Timestep, like: Tensor) -> Tensor:
        """``ᾱ`` at level ``t`` (int, or ``(B,)`` long tensor) shaped to broadcast against ``like``."""
        if isinstance(t, int):
            self._check_level(t)
            values = self._alpha_bar_from_minus_one[t + 1]
        else:
            index = t.detach().to("cpu", torch.long)
            if index.min() < -1 or index.max() >= self.num_train_steps:
                raise ValueError(f"timesteps must lie in [-1, {self.num_train_steps - 1}]")
            values = self._alpha_bar_from_minus_one[index + 1].reshape(-1, *([1] * (like.ndim - 1)))
        return values.to(device=like.device, dtype=like.dtype)

    def _check_level(self, t: int) -> None:
        if not -1 <= t < self.num_train_steps:
            raise ValueError(f"level {t} outside [-1, {self.num_train_steps - 1}]")

    def _pair(self, t: int, prev: int) -> tuple[float, float]:
        """``(ᾱ_t, ᾱ_prev)`` of a reverse step ``t -> prev`` with ``prev < t``."""
        if not prev < t:
            raise ValueError(f"a reverse step needs prev < t, got t={t}, prev={prev}")
        return self.alpha_bar(t), self.alpha_bar(prev)

    # ----------------------------------------------------------------------------------------------------
    # timestep sequences
    def timesteps(self, t_start: int, stride: int = 1) -> list[int]:
        """Descending levels visited by a reverse chain that starts at level ``t_start``.

        ``[t_start]`` followed by the multiples of ``stride`` below it, down to 0 (e.g. ``t_start=999``,
        ``stride=20``: 999, 980, 960, ..., 20, 0). ``stride=1`` is the full chain. ``t_start=-1`` (nothing to
        denoise) gives an empty list. The chain's last step goes from level 0 to clean data (level -1).
        """
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self._check_level(t_start)
        if t_start < 0:
            return []
        below = list(range((t_start - 1) // stride * stride, -1, -stride))
        return [t_start, *below]

    # ----------------------------------------------------------------------------------------------------
    # forward process
    def q_mean_std(self, x0: Tensor, t: Timestep) -> tuple[Tensor, Tensor]:
        """Mean ``sqrt(ᾱ_t) x0`` and std ``sqrt(1 - ᾱ_t)`` of ``q(x_t | x_0)`` (thesis 000 eq. 2.2).

        ``x0``: (B, C, H, W); ``t``: int or (B,) long. The std broadcasts against ``x0``.
        """
        alpha_bar = self._alpha_bar_like(t, x0)
        return alpha_bar.sqrt() * x0, (1 - alpha_bar).sqrt()

    def q_sample(self, x0: Tensor, t: Timestep, noise: Tensor) -> Tensor:
        """``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` (thesis 000 eq. 2.3; MONAI ``add_noise``)."""
        mean, std = self.q_mean_std(x0, t)
        return mean + std * noise

    def q_sample_from(self, x_s: Tensor, s: int, t: int, noise: Tensor) -> Tensor:
        """Sample ``q(x_t | x_s)`` for ``s < t``: ``N(sqrt(α_{t|s}) x_s, β_{t|s} I)``.

        For ``s = t - 1`` this is one forward step ``N(sqrt(1 - β_t) x_{t-1}, β_t I)``, the RePaint
        re-noising of thesis 000 eq. (2.10).
        """
        alpha_bar_t, alpha_bar_s = self._pair(t, s)
        alpha_ts = alpha_bar_t / alpha_bar_s
        return math.sqrt(alpha_ts) * x_s + math.sqrt(1 - alpha_ts) * noise

    # ----------------------------------------------------------------------------------------------------
    # reverse process
    def predict_x0(self, x_t: Tensor, t: Timestep, eps: Tensor) -> Tensor:
        """``x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t)`` (thesis 003 §6.5.1, the rearranged eq. 6.5)."""
        alpha_bar = self._alpha_bar_like(t, x_t)
        return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: int, prev: int) -> tuple[Tensor, float]:
        """Mean and variance of ``q(x_prev | x_t, x_0)`` (thesis 003 §6.5.1; Ho et al. eqs. 6-7).

        ``μ̃ = sqrt(ᾱ_prev) β_{t|prev} / (1 - ᾱ_t) x0 + sqrt(α_{t|prev}) (1 - ᾱ_prev) / (1 - ᾱ_t) x_t``,
        ``β̃ = (1 - ᾱ_prev) / (1 - ᾱ_t) β_{t|prev}``.
        """
        alpha_bar_t, alpha_bar_prev = self._pair(t, prev)
        alpha_step = alpha_bar_t / alpha_bar_prev
        beta_step = 1 - alpha_step
        x0_coef = math.sqrt(alpha_bar_prev) * beta_step / (1 - alpha_bar_t)
        xt_coef = math.sqrt(alpha_step) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_step
        return x0_coef * x0 + xt_coef * x_t, variance

    def reverse_variance(self, t: int, prev: int, variance: ReverseVariance = "small") -> float:
        """Fixed variance ``σ_t²`` of ``p(x_prev | x_t)``.

        ``"small"``: the posterior variance ``β̃`` (the ``σ_t`` of thesis 000 §2.2 and of thesis 003's DDPM
        step; MONAI's default ``fixed_small``). ``"large"``: ``β_{t|prev}`` (MONAI ``fixed_large``; the
        guided-diffusion default when σ is not learned).
        """
        alpha_bar_t, alpha_bar_prev = self._pair(t, prev)
        beta_step = 1 - alpha_bar_t / alpha_bar_prev
        if variance == "small":
            return (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_step
        if variance == "large":
            return beta_step
        raise ValueError(f"unknown reverse variance {variance!r}; expected 'small' or 'large'")

    def ddpm_step(
        self,
        x_t: Tensor,
        t: int,
        prev: int,
        eps: Tensor,
        noise: Tensor | None,
        variance: ReverseVariance = "small",
        clip_x0: bool = False,
    ) -> Tensor:
        """One ancestral step ``x_prev ~ p(x_prev | x_t) = N(μ_θ, σ_t² I)`` (thesis 000 eqs. 2.5-2.6, 3.1).

        ``μ_θ`` is the posterior mean at ``x̂_0(x_t, ε_θ)``; without clipping this equals
        ``(x_t - β_t / sqrt(1 - ᾱ_t) ε_θ) / sqrt(α_t)`` (thesis 003 §6.5.1). ``clip_x0`` clamps ``x̂_0`` to
        [-1, 1] first (MONAI ``clip_sample``). No noise is added on the last step (``prev = -1``, Algorithm 1
        line 8) or when ``noise`` is None (the mean).
        """
        x0 = self.predict_x0(x_t, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.posterior_mean_variance(x0, x_t, t, prev)
        if prev < 0 or noise is None:
            return mean
        return mean + math.sqrt(self.reverse_variance(t, prev, variance)) * noise

    def ddim_step(
        self,
        x_t: Tensor,
        t: int,
        prev: int,
        eps: Tensor,
        eta: float = 0.0,
        noise: Tensor | None = None,
        clip_x0: bool = False,
    ) -> Tensor:
        """Generalised DDIM step (thesis 003 eq. 6.8).

        ``x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε_θ + σ ε`` with
        ``σ = η sqrt(β̃_{t|prev})``; ``η = 0`` is deterministic, ``η = 1`` has the DDPM variance. As in MONAI,
        the direction term uses the network's ``ε_θ`` even when ``x̂_0`` is clipped.
        """
        alpha_bar_t, alpha_bar_prev = self._pair(t, prev)
        x0 = self.predict_x0(x_t, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        sigma = eta * math.sqrt(self.reverse_variance(t, prev, "small"))
        x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if sigma > 0:
            if noise is None:
                raise ValueError("a DDIM step with eta > 0 needs noise")
            x_prev = x_prev + sigma * noise
        return x_prev

    def ddim_inversion_step(self, x_s: Tensor, s: int, t: int, eps: Tensor) -> Tensor:
        """Deterministic DDIM encoding from level ``s`` to a noisier level ``t > s`` (thesis 003 eq. 6.9).

        ``x_t = sqrt(ᾱ_t) x̂_0(x_s, ε_θ(x_s, s)) + sqrt(1 - ᾱ_t) ε_θ(x_s, s)``, the algebraic rearrangement of
        eq. 6.9 (and MONAI ``DDIMScheduler.reversed_step`` without clipping). At ``s = -1`` ``x̂_0 = x_s``.
        """
        alpha_bar_t, _ = self._pair(t, s)
        x0 = self.predict_x0(x_s, s, eps)
        return math.sqrt(alpha_bar_t) * x0 + math.sqrt(1 - alpha_bar_t) * eps


def reverse_pairs(timesteps: list[int]) -> list[tuple[int, int]]:
    """``(t, prev)`` for each reverse step of a descending sequence; the last step goes to clean data (-1)."""
    return list(zip(timesteps, [*timesteps[1:], -1]))
