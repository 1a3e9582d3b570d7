"""Renaming a peer state dict onto our modules, with every source key accounted for.

:class:`StateMapper` copies tensors under new names and remembers which source keys it
used; whatever is left at the end (other than keys a format declares training-only) is an
error, so a checkpoint variant we do not understand is refused instead of half-loaded.
The VQGAN conv encoder/decoder layout LlamaGen and FQGAN share (``conv_blocks.{level}
.res/.attn/.downsample``) is mapped onto :mod:`glotok_bench.tokenizer.conv` here, and its
sizes are read from the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from glotok_bench.errors import CheckpointError
from glotok_bench.tokenizer.conv import ConvAutoencoder

# LlamaGen/FQGAN build every GroupNorm with 32 groups (their `Normalize`).
PEER_NORM_GROUPS = 32


class StateMapper:
    """Builds our state dict from a peer's; ``source`` names the file in errors."""

    def __init__(self, state: Mapping[str, torch.Tensor], source: str):
        self.state, self.source = state, source
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def get(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.source}: the checkpoint lacks {key!r}")
        self.used.add(key)
        return self.state[key]

    def copy(self, src: str, dst: str, names: Iterable[str] = ("weight", "bias")) -> None:
        for name in names:
            self.out[f"{dst}.{name}"] = self.get(f"{src}.{name}")

    def resnet(self, src: str, dst: str) -> None:
        for name in ("norm1", "conv1", "norm2", "conv2"):
            self.copy(f"{src}.{name}", f"{dst}.{name}")
        if f"{src}.nin_shortcut.weight" in self.state:
            self.copy(f"{src}.nin_shortcut", f"{dst}.skip")

    def attention(self, src: str, dst: str) -> None:
        """Separate q, k, v 1x1 convs -> our single qkv conv (stacked in that order)."""
        self.copy(f"{src}.norm", f"{dst}.norm")
        for name in ("weight", "bias"):
            self.out[f"{dst}.qkv.{name}"] = torch.cat([self.get(f"{src}.{p}.{name}") for p in "qkv"])
        self.copy(f"{src}.proj_out", f"{dst}.proj")

    def finish(self, ignored: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """The mapped state; raises if a source key was neither used nor declared ignorable."""
        prefixes = tuple(ignored)
        left = sorted(k for k in self.state if k not in self.used and not k.startswith(prefixes))
        if left:
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            raise CheckpointError(
                f"{self.source}: keys this format does not know: {', '.join(left[:5])}{more}"
            )
        return self.out


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return sorted(found)


def conv_autoencoder_config(
    state: Mapping[str, torch.Tensor], source: str, *, trunk_only: bool
) -> ConvAutoencoder.Config:
    """Our ``vqgan-conv`` config of a LlamaGen-layout encoder/decoder, from its shapes."""
    try:
        base = state["encoder.conv_in.weight"].shape[0]
        levels = _indices(state, r"encoder\.conv_blocks\.(\d+)\.")
        blocks = _indices(state, r"encoder\.conv_blocks\.0\.res\.(\d+)\.")
        widths = [state[f"encoder.conv_blocks.{level}.res.0.conv1.weight"].shape[0] for level in levels]
        decoder_widths = [
            state[f"decoder.conv_blocks.{j}.res.0.conv1.weight"].shape[0] for j in range(len(levels))
        ]
        z_channels = state["decoder.conv_in.weight"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"{source}: the checkpoint lacks {exc.args[0]!r}") from None
    problems = []
    if levels != list(range(len(levels))) or not blocks or blocks != list(range(len(blocks))):
        problems.append("encoder levels or blocks are not numbered 0..n-1")
    if any(w % base for w in widths):
        problems.append(f"level widths {widths} are not multiples of conv_in's {base}")
    if decoder_widths != widths[::-1]:
        # Our autoencoder mirrors one channel_multipliers; LlamaGen allows two (never released).
        problems.append(f"decoder widths {decoder_widths} do not mirror the encoder's {widths}")
    if any(c % PEER_NORM_GROUPS for c in [base, *widths]):
        problems.append(f"channel counts {[base, *widths]} are not multiples of {PEER_NORM_GROUPS}")
    if problems:
        raise CheckpointError(f"{source}: unsupported encoder/decoder: " + "; ".join(problems))
    return ConvAutoencoder.Config(
        base_channels=base,
        channel_multipliers=tuple(w // base for w in widths),
        num_res_blocks=len(blocks),
        z_channels=z_channels,
        norm_groups=PEER_NORM_GROUPS,
        encoder_output="trunk" if trunk_only else "z",
    )


def map_conv_autoencoder(mapper: StateMapper, config: ConvAutoencoder.Config) -> None:
    """encoder.* / decoder.* in LlamaGen's layout -> our autoencoder.encoder/.decoder."""
    levels, blocks = len(config.channel_multipliers), config.num_res_blocks
    mapper.copy("encoder.conv_in", "autoencoder.encoder.conv_in")
    index = 0
    for level in range(levels):  # the order our Encoder's nn.Sequential was built in
        src = f"encoder.conv_blocks.{level}"
        for i in range(blocks):
            mapper.resnet(f"{src}.res.{i}", f"autoencoder.encoder.down.{index}")
            index += 1
            if level == levels - 1:
                mapper.attention(f"{src}.attn.{i}", f"autoencoder.encoder.down.{index}")
                index += 1
        if level != levels - 1:
            mapper.copy(f"{src}.downsample.conv", f"autoencoder.encoder.down.{index}.conv")
            index += 1
    for part in ("encoder", "decoder"):
        mapper.resnet(f"{part}.mid.0", f"autoencoder.{part}.mid.0")
        mapper.attention(f"{part}.mid.1", f"autoencoder.{part}.mid.1")
        mapper.resnet(f"{part}.mid.2", f"autoencoder.{part}.mid.2")
    if config.encoder_output == "z":
        mapper.copy("encoder.norm_out", "autoencoder.encoder.norm_out")
        mapper.copy("encoder.conv_out", "autoencoder.encoder.conv_out")
    mapper.copy("decoder.conv_in", "autoencoder.decoder.conv_in")
    index = 0
    for j in range(levels):  # lowest resolution first, as both decoders run
        src = f"decoder.conv_blocks.{j}"
        for i in range(blocks + 1):
            mapper.resnet(f"{src}.res.{i}", f"autoencoder.decoder.up.{index}")
            index += 1
            if j == 0:
                mapper.attention(f"{src}.attn.{i}", f"autoencoder.decoder.up.{index}")
                index += 1
        if j != levels - 1:
            mapper.copy(f"{src}.upsample.conv", f"autoencoder.decoder.up.{index}.conv")
            index += 1
    mapper.copy("decoder.norm_out", "autoencoder.decoder.norm_out")
    mapper.copy("decoder.conv_out", "autoencoder.decoder.conv_out")


def load_mapped(tokenizer: torch.nn.Module, mapper: StateMapper, *, ignored: Iterable[str] = ()) -> None:
    """Load the mapped weights into ``tokenizer`` (strict); our codebooks' usage counters,
    which peers do not have, start at zero."""
    from glotok_bench.checkpoint_format import architecture, architecture_mismatch

    state = mapper.finish(ignored)
    for key, value in tokenizer.state_dict().items():
        if key.endswith(".hits"):
            state.setdefault(key, torch.zeros_like(value))
    mismatch = architecture_mismatch({k: list(v.shape) for k, v in state.items()}, architecture(tokenizer))
    if mismatch:
        raise CheckpointError(f"{mapper.source}: the weights do not fit the architecture read from them: {mismatch}")
    tokenizer.load_state_dict(state, strict=True)
