"""Exponential moving average of a model's weights, updated with one fused op per step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class EMA:
    """Shadow copies of every state-dict entry of ``model`` (same keys, loadable into it).

    Floating-point parameters are averaged: shadow <- shadow + (1 - decay) (param - shadow),
    all at once with ``torch._foreach_lerp_``; buffers (e.g. BatchNorm statistics) are
    copied. With ``warmup`` the decay is min(decay, (1 + t) / (10 + t)), so the EMA of a
    short run is not stuck near the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.num_updates = 0
        # state_dict() tensors share storage with the live parameters, which optimisers
        # update in place, so these references stay current for the whole run.
        live = model.state_dict()
        parameter_names = {
            name for name, p in model.named_parameters() if p.dtype.is_floating_point
        }
        self._names = list(live)
        self._avg_names = [n for n in self._names if n in parameter_names]
        self._copy_names = [n for n in self._names if n not in parameter_names]
        self._live = live
        self.shadow = {name: t.detach().clone() for name, t in live.items()}

    def current_decay(self) -> float:
        t = self.num_updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        if self._avg_names:
            torch._foreach_lerp_(
                [self.shadow[n] for n in self._avg_names],
                [self._live[n] for n in self._avg_names],
                weight,
            )
        for name in self._copy_names:
            self.shadow[name].copy_(self._live[name])
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like ``model.state_dict()``."""
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor], num_updates: int) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                self.shadow[name].copy_(tensor)
        self.num_updates = int(num_updates)
