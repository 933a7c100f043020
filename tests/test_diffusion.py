"""Noise schedule: closed-form values, DDIM consistency, strided timesteps, reproducible sampling, CFG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.diffusion import NoiseSchedule, ScheduleConfig, guided_x0

# schedules --------------------------------------------------------------------------------------------------


def test_linear_betas_endpoints_and_first_abar() -> None:
    sched = NoiseSchedule(
        ScheduleConfig(num_steps=2000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    )
    assert sched.betas.shape == (2000,)
    assert sched.betas.dtype == torch.float32
    assert sched.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert sched.betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    assert sched.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4, rel=1e-7)
    # Constant increments: beta_t = beta_start + t * (beta_end - beta_start) / (T - 1).
    np.testing.assert_allclose(sched.betas.numpy()[7], 1e-4 + 7 * (0.02 - 1e-4) / 1999, rtol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential"])
def test_alphas_cumprod_is_product_of_alphas(kind: str) -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=500, beta_schedule=kind))  # type: ignore[arg-type]
    betas = sched.betas.double().numpy()
    np.testing.assert_allclose(sched.alphas.numpy(), 1.0 - betas, rtol=1e-6, atol=1e-7)
    oracle = np.array([np.prod(1.0 - betas[: t + 1]) for t in range(500)])
    # atol: the clipped last cosine beta (0.999) loses ~1e-5 relative precision in float32 alpha.
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), oracle, rtol=1e-5, atol=1e-10)
    abar = sched.alphas_cumprod.numpy()
    assert np.all(np.diff(abar) < 0), "abar must decrease strictly: each step adds noise"
    assert np.all((abar > 0) & (abar < 1))


def test_cosine_abar_matches_nichol_dhariwal_eq17() -> None:
    T, s = 1000, 0.008
    sched = NoiseSchedule(ScheduleConfig(num_steps=T, beta_schedule="cosine"))

    def f(t: float) -> float:
        return math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2

    for i in [0, 1, 10, 250, 500, 900, T - 2]:  # index i is the paper's t = i + 1
        assert sched.alphas_cumprod[i].item() == pytest.approx(f(i + 1) / f(0), rel=1e-5, abs=1e-8)
    assert sched.betas.max().item() <= 0.999 + 1e-7
    assert sched.betas[-1].item() == pytest.approx(0.999, rel=1e-6)  # f(T) = 0, so the last beta is clipped


def test_exponential_betas_have_constant_ratio() -> None:
    T = 300
    sched = NoiseSchedule(
        ScheduleConfig(num_steps=T, beta_schedule="exponential", beta_start=1e-4, beta_end=0.02)
    )
    betas = sched.betas.double().numpy()
    assert betas[0] == pytest.approx(1e-4, rel=1e-6)
    assert betas[-1] == pytest.approx(0.02, rel=1e-6)
    ratios = betas[1:] / betas[:-1]
    np.testing.assert_allclose(ratios, (0.02 / 1e-4) ** (1 / (T - 1)), rtol=1e-5)


def test_single_step_schedules_are_defined() -> None:
    for kind in ["linear", "exponential"]:
        sched = NoiseSchedule(ScheduleConfig(num_steps=1, beta_schedule=kind))  # type: ignore[arg-type]
        assert sched.betas.tolist() == pytest.approx([1e-4])
    assert NoiseSchedule(ScheduleConfig(num_steps=1)).inference_timesteps(1).tolist() == [0]


# config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_steps": 0}, r"num_steps must be an integer >= 1, got 0"),
        ({"num_steps": 2.5}, r"num_steps must be an integer >= 1, got 2\.5"),
        ({"beta_schedule": "quadratic"}, r"beta_schedule must be one of .*'quadratic'"),
        ({"beta_start": 0.0}, r"beta_start must lie in \(0, 1\), got 0\.0"),
        ({"beta_end": 1.0}, r"beta_end must lie in \(0, 1\), got 1\.0"),
        ({"beta_start": 0.05, "beta_end": 0.02}, r"beta_start=0\.05 > beta_end=0\.02"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScheduleConfig(**kwargs)  # type: ignore[arg-type]


# forward process --------------------------------------------------------------------------------------------


def test_add_noise_matches_hand_formula_and_broadcasts() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=100))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 5, generator=g)
    noise = torch.randn(3, 4, 5, generator=g)
    t = torch.tensor([0, 42, 99])
    out = sched.add_noise(x0, noise, t)
    for b, tb in enumerate(t.tolist()):
        abar = sched.alphas_cumprod[tb].item()
        expected = math.sqrt(abar) * x0[b] + math.sqrt(1 - abar) * noise[b]
        torch.testing.assert_close(out[b], expected)


def test_add_noise_rejects_bad_timesteps() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=10))
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\], got values in \[0, 10\]"):
        sched.add_noise(x, x, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        sched.add_noise(x, x, torch.tensor([0]))
    with pytest.raises(ValueError, match="integer tensor"):
        sched.add_noise(x, x, torch.tensor([0.0, 1.0]))


def test_sample_timesteps_cover_the_trained_range() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=5))
    t = sched.sample_timesteps(5000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (5000,)
    assert set(t.tolist()) == {0, 1, 2, 3, 4}  # includes T - 1, the step sampling starts from


# DDIM timesteps ---------------------------------------------------------------------------------------------


def test_inference_timesteps_all_counts_for_T_2000() -> None:
    T = 2000
    sched = NoiseSchedule(ScheduleConfig(num_steps=T))
    for n in range(1, T + 1):  # includes non-divisors such as 3, 7, 1999
        ts = sched.inference_timesteps(n)
        assert ts.dtype == torch.long
        assert ts.shape == (n,), n
        assert ts[0].item() == T - 1, n  # the noisiest *trained* step, never T
        assert ts.min().item() >= 0, n
        assert bool((ts[1:] < ts[:-1]).all()), n  # strictly descending, hence unique
    assert sched.inference_timesteps(T).tolist() == list(range(T - 1, -1, -1))
    assert sched.inference_timesteps(3).tolist() == [1999, 1000, 0]  # round(999.5) half up


@pytest.mark.parametrize("n", [0, -1, 2001])
def test_inference_timesteps_rejects_out_of_range(n: int) -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=2000))
    with pytest.raises(ValueError, match=rf"num_inference_steps must be an integer in \[1, 2000\], got {n}"):
        sched.inference_timesteps(n)


# DDIM step / sampling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential"])
@pytest.mark.parametrize(("t", "t_prev"), [(1999, 1899), (1000, 0), (5, 4), (1999, 0)])
def test_ddim_step_with_true_x0_lands_on_the_same_noise_trajectory(kind: str, t: int, t_prev: int) -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=2000, beta_schedule=kind))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 8, generator=g, dtype=torch.float64)
    x_t = sched.add_noise(x0, noise, torch.full((4,), t))
    x_prev = sched.ddim_step(x_t, x0, t, t_prev)
    expected = sched.add_noise(x0, noise, torch.full((4,), t_prev))
    torch.testing.assert_close(x_prev, expected, rtol=1e-6, atol=1e-6)


def test_ddim_step_final_returns_x0_and_validates_indices() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=10))
    x_t, x0 = torch.randn(2, 3), torch.randn(2, 3)
    assert sched.ddim_step(x_t, x0, 0, None) is x0
    with pytest.raises(ValueError, match=r"t must be an integer in \[0, 9\], got 10"):
        sched.ddim_step(x_t, x0, 10, 5)
    with pytest.raises(ValueError, match=r"t_prev must be < t, got t=3, t_prev=3"):
        sched.ddim_step(x_t, x0, 3, 3)


@pytest.mark.parametrize("n", [1, 7, 50])
def test_sample_with_oracle_denoiser_returns_its_x0(n: int) -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=2000))
    target = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    seen: list[int] = []

    def oracle(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (3,) and t.dtype == torch.long and bool((t == t[0]).all())
        seen.append(int(t[0]))
        return target.clone()

    out = sched.sample(oracle, (3, 16), n, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, target)
    assert seen == sched.inference_timesteps(n).tolist()
    assert seen[0] == 1999


def test_sample_is_reproducible_per_generator_seed() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=100))

    def shrink(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # deterministic, depends on x_t
        return 0.5 * x_t

    def run(seed: int) -> torch.Tensor:
        return sched.sample(shrink, (4, 6), 10, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_to_moves_the_schedule_tensors() -> None:
    sched = NoiseSchedule(ScheduleConfig(num_steps=10)).to("cpu")
    assert sched.device == torch.device("cpu")
    assert sched.alphas_cumprod.device == sched.betas.device == sched.alphas.device


# guidance ---------------------------------------------------------------------------------------------------


def test_guided_x0_formula() -> None:
    cond = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    uncond = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(guided_x0(cond, uncond, 0.0), cond)
    # (1 + 5) * cond - 5 * uncond, computed by hand.
    torch.testing.assert_close(guided_x0(cond, uncond, 5.0), torch.tensor([[3.5, 12.0], [13.0, -11.0]]))
    with pytest.raises(ValueError, match="same shape"):
        guided_x0(cond, uncond[:1], 1.0)
