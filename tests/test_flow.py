"""Flow matching: samplers checked against a distribution whose exact velocity field is known.

Data x0 ~ N(mu, s^2) per element and x_t = (1 - t) x0 + t * eps give
    v(x, t) = E[eps - x0 | x_t = x] = (t - (1 - t) s^2) / var_t * (x - (1 - t) mu) - mu,
    var_t = (1 - t)^2 s^2 + t^2,
and the probability-flow ODE maps noise eps at t=1 to exactly mu + s * eps at t=0, so every
sampler's error can be measured against the exact answer.
"""

import pytest
import torch

from sora_core.flow import (
    SAMPLERS,
    flow_loss,
    get_sampler,
    noise_to_start,
    resolution_shift,
    sample_training_t,
    sigmas_for,
    time_shift,
)

MU, S = 0.7, 0.3


def exact_velocity(x, t_frames):
    t = t_frames[:, None, :, None, None]
    var = (1 - t) ** 2 * S**2 + t**2
    return (t - (1 - t) * S**2) / var * (x - (1 - t) * MU) - MU


def exact_solution(x_t, t):
    """Where the ODE carries x at time t by t = 0."""
    var = (1 - t) ** 2 * S**2 + t**2
    return MU + S * (x_t - (1 - t) * MU) / var**0.5


def noise(seed=0, shape=(4, 2, 3, 4, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ones(x):
    return torch.ones(x.shape[0], x.shape[2], dtype=x.dtype)


def error(name, steps, shift=1.0):
    eps = noise()
    out = get_sampler(name)(exact_velocity, eps.clone(), sigmas_for(steps, shift).double(), strength=ones(eps))
    return (out - exact_solution(eps, 1.0)).abs().max().item()


# Measured: euler 0.022 @ 80 steps (first order), heun 0.011 @ 20 (second order), dpmpp_2m 0.0074 @ 20.
@pytest.mark.parametrize("name,steps,tolerance", [("euler", 80, 0.03), ("heun", 20, 0.015), ("dpmpp_2m", 20, 0.01)])
def test_samplers_reach_the_exact_answer(name, steps, tolerance):
    assert error(name, steps) < tolerance


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_more_steps_mean_less_error(name):
    assert error(name, 40) < error(name, 10)


def test_higher_order_samplers_beat_euler_at_equal_steps():
    assert error("heun", 20) < error("euler", 20) / 3
    assert error("dpmpp_2m", 20) < error("euler", 20) / 3


def test_heun_is_second_order():
    assert error("heun", 40) < error("heun", 20) / 3  # halving the step size quarters the error


def test_samplers_work_with_a_shifted_schedule():
    for name in SAMPLERS:
        assert error(name, 60, shift=3.0) < 0.1


def test_partial_strength_starts_part_way_and_lands_on_the_exact_answer():
    # SDEdit: x0 noised to t = 0.6, then solved from there.
    x0, eps = noise(1), noise(2)
    s = 0.6
    strength = ones(x0) * s
    x = noise_to_start(x0, eps, s, strength)
    out = get_sampler("heun")(exact_velocity, x.clone(), sigmas_for(20, 1.0, start=s).double(), strength=strength)
    assert (out - exact_solution(x, s)).abs().max() < 0.01


def test_given_frames_never_move_and_mixed_frames_follow_their_own_time():
    eps, given = noise(3), noise(4)
    strength = ones(eps)
    strength[:, 0] = 0.0  # frame 0 given
    strength[:, 2] = 0.5  # frame 2 waits at t = 0.5
    x = noise_to_start(given, eps, 1.0, strength)
    assert torch.equal(x[:, :, 0], given[:, :, 0])
    for name in SAMPLERS:
        out = get_sampler(name)(exact_velocity, x.clone(), sigmas_for(100).double(), strength=strength)
        assert torch.equal(out[:, :, 0], given[:, :, 0]), name
        frame2_start = x[:, :, 2:3]
        assert (out[:, :, 2:3] - exact_solution(frame2_start, 0.5)).abs().max() < 0.05, name


def test_schedule_runs_from_start_to_zero_and_shift_spends_more_steps_at_high_noise():
    plain, shifted = sigmas_for(10), sigmas_for(10, shift=3.0)
    for sig in (plain, shifted):
        assert sig[0] == 1.0 and sig[-1] == 0.0 and (sig.diff() < 0).all()
    assert (shifted[1:-1] > plain[1:-1]).all()
    part = sigmas_for(10, 3.0, start=0.5)
    assert part[0] == pytest.approx(0.5) and len(part) == 11


def test_bigger_grids_get_bigger_shifts():
    assert resolution_shift(256) == 1.0
    assert resolution_shift(4096) > resolution_shift(1024) > 1.0
    assert time_shift(torch.tensor(0.5), 3.0) == pytest.approx(0.75)


def test_training_times_are_logit_normal_in_zero_one():
    t = sample_training_t(20000, generator=torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01
    assert ((t > 0.3) & (t < 0.7)).float().mean() > 0.5  # mass concentrates mid-way


def test_the_exact_velocity_has_zero_flow_loss_excess_and_given_frames_are_excluded():
    x0, eps = noise(5).float(), noise(6).float()
    t = torch.full((x0.shape[0],), 0.5)
    strength = ones(x0).float()
    strength[:, 1] = 0.0

    def perfect(x, tf):
        return eps - x0

    def wrong_on_given(x, tf):
        v = (eps - x0).clone()
        v[:, :, 1] += 100.0  # garbage on the given frame only
        return v

    assert flow_loss(perfect, x0, t, strength, eps).item() == 0.0
    assert flow_loss(wrong_on_given, x0, t, strength, eps).item() == 0.0


def test_unknown_sampler_names_the_choices():
    with pytest.raises(ValueError, match="sampler='magic'.*euler"):
        get_sampler("magic")


@pytest.mark.parametrize("shift", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_a_shift_that_would_collapse_the_schedule_is_refused(shift):
    with pytest.raises(ValueError, match=r"shift=.* is not allowed: use a number > 0"):
        sigmas_for(10, shift=shift)
