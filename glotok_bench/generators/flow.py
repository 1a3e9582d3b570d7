"""Flow matching on the linear path, as xAR uses it (SiT's "linear" interpolant).

x_t = (1 - t) x + t e with e ~ N(0, I): t = 0 is data, t = 1 is noise. The network
predicts the velocity dx_t/dt = e - x. Sampling integrates from t = 1 down to 0, either
the probability-flow ODE (Euler) or the reverse SDE with diffusion g(t)^2 = 2t
(Euler-Maruyama), whose drift needs the score, obtained from the velocity:

    score(x_t) = -(x_t + (1 - t) v) / t            (linear path)
    drift      = v - 0.5 g^2 score = v - t score

The SDE stops its noisy steps at ``t_end`` (0.04, as SiT/xAR) because the score blows up
as t -> 0; one last deterministic step lands on t = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from glotok_bench.errors import ConfigError
from glotok_bench.generators.options import Integrator

TimeSampling = Literal["logit_normal", "uniform"]


def sample_times(
    shape: tuple[int, ...],
    kind: TimeSampling,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times in (0, 1): logit-normal (SD3/xAR; mid-path times matter most) or uniform."""
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(shape, device=device))
    if kind == "uniform":
        return torch.rand(shape, device=device)
    raise ConfigError(f"unknown time sampling {kind!r}; use 'logit_normal' or 'uniform'")


def interpolate(
    x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for data x, noise and t broadcastable to x."""
    return (1 - t) * x + t * noise, noise - x


@torch.no_grad()
def integrate(
    velocity: Callable[[torch.Tensor, float], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    *,
    method: Integrator = "euler_maruyama",
    generator: torch.Generator | None = None,
    t_end: float = 0.04,
) -> torch.Tensor:
    """Integrate from ``noise`` (t = 1) to a sample (t = 0) in ``steps`` network evaluations.

    ``velocity(x, t)`` returns v at time t (guidance already applied). All state is fp64
    so a long trajectory does not drift from rounding; the network sees its own dtype.
    """
    if steps < 1:
        raise ConfigError(f"the flow sampler needs at least one step, got {steps}")
    x = noise.double()
    if method not in ("euler", "euler_maruyama"):
        raise ConfigError(f"unknown flow sampler {method!r}; use 'euler' or 'euler_maruyama'")
    # One SDE step from pure noise lands far off (its drift assumes small steps): use the ODE.
    if method == "euler" or steps == 1:
        times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            x = x + (t_next - t) * velocity(x.to(noise.dtype), t).double()
        return x.to(noise.dtype)
    times = torch.linspace(1.0, t_end, steps, dtype=torch.float64).tolist() + [0.0]
    for index, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        dt = t_next - t  # negative: integrating backwards in time
        v = velocity(x.to(noise.dtype), t).double()
        score = -(x + (1 - t) * v) / t
        x = x + (v - t * score) * dt
        if index < len(times) - 2:  # the last step, to t = 0, adds no noise
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
            x = x + (2 * t) ** 0.5 * abs(dt) ** 0.5 * eps
    return x.to(noise.dtype)


def steps_for_cell(cell: int, cells: int, first: int, last: int) -> int:
    """Flow steps for cell ``cell`` of ``cells``: linear from ``first`` (first cell) to ``last``.

    xAR spends more steps on the early cells, which start from nothing but the class,
    and fewer on late ones, which are well determined by their context.
    """
    if cells <= 1:
        return first
    return int(round(first + (last - first) * cell / (cells - 1)))
