"""Released peer tokenizers (LlamaGen VQModel, FQGAN dual VQModel) through load_tokenizer.

The checkpoints are random-init state dicts in the peers' exact key layout, saved in the
outer dict their training scripts write (``args`` an argparse.Namespace). The reference
forward passes below are written from the peers' code, functionally on the state dict
(separate q/k/v convs, bmm attention, einsum distances, MultiheadAttention by hand), so
they share nothing with the modules the loader maps the weights onto.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F

import glotok_bench
from glotok_bench.errors import CheckpointError
from glotok_bench.grid.runner import run_grid
from glotok_bench.tokenizer.checkpoint import load_tokenizer
from glotok_bench.weights import file_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CH, CH_MULT, BLOCKS, Z, RES = 32, (1, 2), 1, 32, 32  # 2x down: a 16x16 token grid at 32 px
CODES, DIM, DEPTH = 64, 4, 2

# -- random-init state dicts in the peers' layouts ------------------------------------------


class _State(dict):
    def __init__(self, seed: int):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator)

    def conv(self, key: str, c_in: int, c_out: int, k: int) -> None:
        self[f"{key}.weight"] = self.randn(c_out, c_in, k, k) / (c_in * k * k) ** 0.5
        self[f"{key}.bias"] = 0.05 * self.randn(c_out)

    def linear(self, key: str, c_in: int, c_out: int) -> None:
        self[f"{key}.weight"] = self.randn(c_out, c_in) / c_in**0.5
        self[f"{key}.bias"] = 0.05 * self.randn(c_out)

    def norm(self, key: str, c: int) -> None:
        self[f"{key}.weight"] = 1 + 0.1 * self.randn(c)
        self[f"{key}.bias"] = 0.1 * self.randn(c)

    def res(self, key: str, c_in: int, c_out: int) -> None:
        self.norm(f"{key}.norm1", c_in)
        self.conv(f"{key}.conv1", c_in, c_out, 3)
        self.norm(f"{key}.norm2", c_out)
        self.conv(f"{key}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            self.conv(f"{key}.nin_shortcut", c_in, c_out, 1)

    def attn(self, key: str, c: int) -> None:
        self.norm(f"{key}.norm", c)
        for name in ("q", "k", "v", "proj_out"):
            self.conv(f"{key}.{name}", c, c, 1)

    def trunk_and_decoder(self) -> int:
        """LlamaGen's Encoder (without norm_out/conv_out) and Decoder; returns the trunk width."""
        self.conv("encoder.conv_in", 3, CH, 3)
        c = CH
        for level, mult in enumerate(CH_MULT):
            for i in range(BLOCKS):
                self.res(f"encoder.conv_blocks.{level}.res.{i}", c, CH * mult)
                c = CH * mult
                if level == len(CH_MULT) - 1:
                    self.attn(f"encoder.conv_blocks.{level}.attn.{i}", c)
            if level != len(CH_MULT) - 1:
                self.conv(f"encoder.conv_blocks.{level}.downsample.conv", c, c, 3)
        for part in ("encoder", "decoder"):
            self.res(f"{part}.mid.0", c, c)
            self.attn(f"{part}.mid.1", c)
            self.res(f"{part}.mid.2", c, c)
        self.conv("decoder.conv_in", Z, c, 3)
        for j, mult in enumerate(reversed(CH_MULT)):
            for i in range(BLOCKS + 1):
                self.res(f"decoder.conv_blocks.{j}.res.{i}", c, CH * mult)
                c = CH * mult
                if j == 0:
                    self.attn(f"decoder.conv_blocks.{j}.attn.{i}", c)
            if j != len(CH_MULT) - 1:
                self.conv(f"decoder.conv_blocks.{j}.upsample.conv", c, c, 3)
        self.norm("decoder.norm_out", c)
        self.conv("decoder.conv_out", c, 3, 3)
        return CH * CH_MULT[-1]


def llamagen_state(seed: int = 0) -> dict[str, torch.Tensor]:
    state = _State(seed)
    width = state.trunk_and_decoder()
    state.norm("encoder.norm_out", width)
    state.conv("encoder.conv_out", width, Z, 3)
    state.conv("quant_conv", Z, DIM, 1)
    state["quantize.embedding.weight"] = state.randn(CODES, DIM)
    state["quantize.codebook_used"] = torch.zeros(65536)
    state.conv("post_quant_conv", DIM, Z, 1)
    return dict(state)


def fqgan_state(seed: int = 1, *, with_feature_head: bool = True) -> dict[str, torch.Tensor]:
    state = _State(seed)
    width = state.trunk_and_decoder()
    grid = RES // 2 ** (len(CH_MULT) - 1)
    for head, suffix in (("semantic_head", "sem"), ("visual_head", "vis")):
        key = f"encoder.{head}.0"
        state[f"{key}.positional_embedding"] = width**-0.5 * state.randn(grid * grid, width)
        state.norm(f"{key}.ln_pre", width)
        for i in range(DEPTH):
            block = f"{key}.transformer.{i}"
            state.norm(f"{block}.ln_1", width)
            state[f"{block}.attn.in_proj_weight"] = state.randn(3 * width, width) / width**0.5
            state[f"{block}.attn.in_proj_bias"] = 0.05 * state.randn(3 * width)
            state.linear(f"{block}.attn.out_proj", width, width)
            state.norm(f"{block}.ln_2", width)
            state.linear(f"{block}.mlp.c_fc", width, 4 * width)
            state.linear(f"{block}.mlp.c_proj", 4 * width, width)
        state.norm(f"{key}.ln_post", width)
        state.norm(f"encoder.norm_out_{suffix}", width)
        state.conv(f"encoder.conv_out_{suffix}", width, Z, 3)
        state.conv(f"quant_conv_{suffix}", Z, DIM, 1)
        state[f"quantize_{suffix}.embedding.weight"] = state.randn(CODES, DIM)
        state[f"quantize_{suffix}.codebook_used"] = torch.zeros(65536)
    state.conv("post_quant_conv", 2 * DIM, Z, 1)
    if with_feature_head:  # FQGAN's CLIP feature prediction head: training-only
        state.linear("feat_pred_head.upscale.0", DIM, 64)
        state["feat_pred_head.class_embedding"] = state.randn(1, 64)
    return dict(state)


def save_like_their_trainer(path: Path, state: dict, **args) -> Path:
    """The dict LlamaGen's vq_train.py / FQGAN's vq_train_dual.py save every ckpt_every steps."""
    first = next(iter(state.values()))
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros_like(first)}},
                          "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "params": [0]}]},
            "discriminator": {"conv.weight": torch.zeros(2, 3, 4, 4)},
            "optimizer_disc": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]},
            "steps": 1234,
            "args": argparse.Namespace(image_size=RES, codebook_l2_norm=True, codebook_size=CODES,
                                       codebook_embed_dim=DIM, vq_model="VQ-16", ema=False, **args),
        },
        path,
    )
    return path


# -- the peers' forward passes, functional, from their code ---------------------------------


def _conv(x, sd, key, stride=1, padding=None):
    weight = sd[f"{key}.weight"]
    return F.conv2d(x, weight, sd[f"{key}.bias"], stride, weight.shape[-1] // 2 if padding is None else padding)


def _gn(x, sd, key):
    return F.group_norm(x, 32, sd[f"{key}.weight"], sd[f"{key}.bias"], eps=1e-6)


def _swish(x):
    return x * torch.sigmoid(x)


def _res(x, sd, key):
    h = _conv(_swish(_gn(x, sd, f"{key}.norm1")), sd, f"{key}.conv1")
    h = _conv(_swish(_gn(h, sd, f"{key}.norm2")), sd, f"{key}.conv2")
    if f"{key}.nin_shortcut.weight" in sd:
        x = _conv(x, sd, f"{key}.nin_shortcut")
    return x + h


def _attn(x, sd, key):
    h = _gn(x, sd, f"{key}.norm")
    q, k, v = (_conv(h, sd, f"{key}.{name}") for name in "qkv")
    b, c, hh, ww = q.shape
    w_ = torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * int(c) ** -0.5
    w_ = F.softmax(w_, dim=2)
    out = torch.bmm(v.reshape(b, c, -1), w_.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + _conv(out, sd, f"{key}.proj_out")


def _trunk(x, sd):
    h = _conv(x, sd, "encoder.conv_in")
    last = len(CH_MULT) - 1
    for level in range(len(CH_MULT)):
        for i in range(BLOCKS):
            h = _res(h, sd, f"encoder.conv_blocks.{level}.res.{i}")
            if level == last:
                h = _attn(h, sd, f"encoder.conv_blocks.{level}.attn.{i}")
        if level != last:
            h = _conv(F.pad(h, (0, 1, 0, 1)), sd, f"encoder.conv_blocks.{level}.downsample.conv", 2, 0)
    return _res(_attn(_res(h, sd, "encoder.mid.0"), sd, "encoder.mid.1"), sd, "encoder.mid.2")


def _decoder(z, sd):
    h = _conv(z, sd, "decoder.conv_in")
    h = _res(_attn(_res(h, sd, "decoder.mid.0"), sd, "decoder.mid.1"), sd, "decoder.mid.2")
    for j in range(len(CH_MULT)):
        for i in range(BLOCKS + 1):
            h = _res(h, sd, f"decoder.conv_blocks.{j}.res.{i}")
            if j == 0:
                h = _attn(h, sd, f"decoder.conv_blocks.{j}.attn.{i}")
        if j != len(CH_MULT) - 1:
            h = _conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"decoder.conv_blocks.{j}.upsample.conv")
    return _conv(_swish(_gn(h, sd, "decoder.norm_out")), sd, "decoder.conv_out")


def _quantize(z, weight):
    """LlamaGen's VectorQuantizer with codebook_l2_norm: (z_q [B,d,h,w], indices [B,h,w])."""
    z = torch.einsum("b c h w -> b h w c", z).contiguous()
    flat = F.normalize(z.view(-1, weight.shape[1]), p=2, dim=-1)
    z = F.normalize(z, p=2, dim=-1)
    embedding = F.normalize(weight, p=2, dim=-1)
    d = (torch.sum(flat**2, dim=1, keepdim=True) + torch.sum(embedding**2, dim=1)
         - 2 * torch.einsum("bd,dn->bn", flat, torch.einsum("n d -> d n", embedding)))
    indices = torch.argmin(d, dim=1)
    z_q = z + (embedding[indices].view(z.shape) - z)
    return torch.einsum("b h w c -> b c h w", z_q), indices.view(z.shape[:3])


def _ln(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[f"{key}.weight"], sd[f"{key}.bias"])


def _adapter(x, sd, key, heads=8):
    """FQGAN's FactorizedAdapter with nn.MultiheadAttention written out."""
    b, c, h, w = x.shape
    t = _ln(x.flatten(2).transpose(1, 2) + sd[f"{key}.positional_embedding"], sd, f"{key}.ln_pre")
    for i in range(DEPTH):
        block = f"{key}.transformer.{i}"
        y = _ln(t, sd, f"{block}.ln_1")
        q, k, v = (y @ sd[f"{block}.attn.in_proj_weight"].T + sd[f"{block}.attn.in_proj_bias"]).chunk(3, -1)
        split = lambda a: a.reshape(b, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
        weights = F.softmax(split(q) @ split(k).transpose(-1, -2) / (c // heads) ** 0.5, dim=-1)
        attended = (weights @ split(v)).transpose(1, 2).reshape(b, -1, c)
        t = t + attended @ sd[f"{block}.attn.out_proj.weight"].T + sd[f"{block}.attn.out_proj.bias"]
        hidden = F.gelu(_ln(t, sd, f"{block}.ln_2") @ sd[f"{block}.mlp.c_fc.weight"].T + sd[f"{block}.mlp.c_fc.bias"])
        t = t + hidden @ sd[f"{block}.mlp.c_proj.weight"].T + sd[f"{block}.mlp.c_proj.bias"]
    return _ln(t, sd, f"{key}.ln_post").transpose(1, 2).reshape(b, c, h, w)


def llamagen_reference(sd, images):
    h = _conv(_swish(_gn(_trunk(images, sd), sd, "encoder.norm_out")), sd, "encoder.conv_out")
    quant, indices = _quantize(_conv(h, sd, "quant_conv"), sd["quantize.embedding.weight"])
    return _decoder(_conv(quant, sd, "post_quant_conv"), sd), indices


def fqgan_reference(sd, images, *, order=("vis", "sem")):
    trunk = _trunk(images, sd)
    quant, indices = {}, {}
    for head, suffix in (("semantic_head", "sem"), ("visual_head", "vis")):
        h = _adapter(trunk, sd, f"encoder.{head}.0")
        h = _conv(_swish(_gn(h, sd, f"encoder.norm_out_{suffix}")), sd, f"encoder.conv_out_{suffix}")
        quant[suffix], indices[suffix] = _quantize(_conv(h, sd, f"quant_conv_{suffix}"), sd[f"quantize_{suffix}.embedding.weight"])
    z = torch.cat([quant[name] for name in order], dim=1)
    return _decoder(_conv(z, sd, "post_quant_conv"), sd), indices


def _images(seed: int = 3, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- equivalence ---------------------------------------------------------------------------


def test_llamagen_checkpoint_reconstructs_like_llamagen(tmp_path):
    state = llamagen_state()
    path = save_like_their_trainer(tmp_path / "0001234.pt", state)
    tok = glotok_bench.load_tokenizer(path)
    images = _images()
    with torch.no_grad():
        expected, expected_indices = llamagen_reference(state, images)
        ours = tok(images).reconstruction
        encoding = tok.encode(images)
        decoded = tok.decode_indices(encoding.indices)
    assert tok.codebook_sizes == {"codes": CODES}
    assert (ours - expected).abs().max() < 1e-4
    assert torch.equal(encoding.indices["codes"], expected_indices)
    assert len(expected_indices.unique()) > 8  # the comparison covers many codes, not one
    assert (decoded - expected).abs().max() < 1e-4


def test_ema_weights_are_used_when_asked_for_and_saved(tmp_path):
    path = tmp_path / "ema.pt"
    torch.save({"model": llamagen_state(0), "ema": llamagen_state(5), "steps": 10}, path)
    images = _images()
    for weights, seed in (("ema", 5), ("model", 0)):
        tok, payload = load_tokenizer(path, weights=weights)
        with torch.no_grad():
            expected, _ = llamagen_reference(llamagen_state(seed), images)
            assert (tok(images).reconstruction - expected).abs().max() < 1e-4
        assert payload["ema"] is not None


def test_fqgan_dual_checkpoint_reconstructs_like_fqgan_and_needs_visual_then_semantic(tmp_path):
    state = fqgan_state()
    path = save_like_their_trainer(tmp_path / "0001234.pt", state, with_clip_supervision=True)
    tok = glotok_bench.load_tokenizer(path, format="fqgan-dual")
    images = _images()
    with torch.no_grad():
        expected, expected_indices = fqgan_reference(state, images)
        swapped, _ = fqgan_reference(state, images, order=("sem", "vis"))
        ours = tok(images).reconstruction
        indices = tok.encode(images).indices
        decoded = tok.decode_indices(indices)
    assert (ours - expected).abs().max() < 1e-4
    assert torch.equal(indices["semantic"], expected_indices["sem"])
    assert torch.equal(indices["visual"], expected_indices["vis"])
    assert (decoded - expected).abs().max() < 1e-4
    # The decoder input order is observable: FQGAN's [visual, semantic] is not [semantic, visual].
    assert (swapped - expected).abs().max() > 1e-2
    # FQGAN's heads are our transformer adapters on a trunk-only encoder: one module for both.
    config = tok.config
    assert config.autoencoder.config.encoder_output == "trunk"
    assert config.quantizer.config.adapter.kind == "transformer"
    assert config.quantizer.config.adapter.depth == DEPTH and config.quantizer.config.adapter.grid_size == 16


def test_l2_normalised_lookup_is_the_nearest_unit_vector_not_the_nearest_raw_code():
    from glotok_bench.tokenizer.quantizers import Codebook

    codebook = Codebook(3, 2, "cosine", 0.25)
    with torch.no_grad():
        # Raw codes: a long one along x, a short one near z, one pointing away.
        codebook.embedding.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.1], [-1.0, 0.0]]))
    z = torch.tensor([0.3, 0.2]).reshape(1, 2, 1, 1)
    branch, _, _ = codebook(z)
    # cos(z, x) = 0.83 > cos(z, y) = 0.55, although the short code is nearer z in raw space.
    assert branch.indices.item() == 0
    assert torch.allclose(branch.quantized.flatten(), torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.cdist(z.reshape(1, 2), codebook.embedding.weight).argmin().item() == 1


# -- formats, detection, errors ------------------------------------------------------------


def test_paper_presets_use_fqgan_adapters_and_cpu_presets_keep_1x1(tmp_path):
    from glotok_bench.cli.options import load_run_config

    for name in ("glotok", "glotok-2x", "fqgan-local", "dual-vanilla"):
        tokenizer = load_run_config(REPO / "configs" / f"{name}.toml", ()).tokenizer
        assert tokenizer.autoencoder.config.encoder_output == "trunk", name
        assert tokenizer.quantizer.config.adapter.kind == "transformer", name
    for path in [REPO / "configs" / "vq-single.toml", *sorted((REPO / "configs" / "cpu").glob("*.toml"))]:
        tokenizer = load_run_config(path, ()).tokenizer
        assert tokenizer.autoencoder.config.encoder_output == "z", path
        assert tokenizer.quantizer.config.adapter.kind == "conv1x1", path


def test_a_peer_config_round_trips_and_the_cli_reconstructs_with_it(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from glotok_bench.cli import cli
    from glotok_bench.tokenizer.model import tokenizer_config_from_dict

    path = save_like_their_trainer(tmp_path / "fq.pt", fqgan_state())
    tok = glotok_bench.load_tokenizer(path)
    assert tokenizer_config_from_dict(load_tokenizer(path)[1]["tokenizer_config"]) == tok.config
    Image.new("RGB", (RES, RES), (200, 30, 90)).save(tmp_path / "red.png")
    result = CliRunner().invoke(cli, ["reconstruct", str(path), str(tmp_path / "red.png"),
                                      "--out", str(tmp_path / "grid.png"), "--weights", "model"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "grid.png").size[0] >= 2 * RES


def test_formats_are_detected_from_keys_and_read_from_shapes(tmp_path):
    llamagen = torch.save(llamagen_state(), tmp_path / "bare.pt")  # a bare state dict loads too
    del llamagen
    tok, payload = load_tokenizer(tmp_path / "bare.pt")
    assert payload["format"] == "llamagen" and payload["family"] == "LlamaGen"
    assert payload["sha256"] == file_sha256(tmp_path / "bare.pt")
    autoencoder = tok.config.autoencoder.config
    assert (autoencoder.base_channels, autoencoder.channel_multipliers, autoencoder.z_channels) == (32, (1, 2), Z)
    assert tok.config.resolution == 256  # no args: LlamaGen's default image size
    fq = save_like_their_trainer(tmp_path / "fq.pt", fqgan_state(with_feature_head=False))
    _, fq_payload = load_tokenizer(fq)
    assert fq_payload["tokenizer_config"]["quantizer"]["name"] == "dual"
    assert fq_payload["format"] == "fqgan-dual" and fq_payload["step"] == 1234
    with pytest.raises(CheckpointError, match="format 'llamagen'|lacks"):
        load_tokenizer(fq, format="llamagen")
    unknown = llamagen_state()
    unknown["quantize.extra_thing"] = torch.zeros(2)
    torch.save({"model": unknown}, tmp_path / "variant.pt")
    with pytest.raises(CheckpointError, match="quantize.extra_thing"):
        load_tokenizer(tmp_path / "variant.pt")
    torch.save({"model": {"layer.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="matches no registered peer format"):
        load_tokenizer(tmp_path / "other.pt")


class _RenamedLlamaGen:
    """A third party's format: LlamaGen weights under a 'vq.' prefix."""

    family = "Renamed"

    @attrs.frozen
    class Config:
        pass

    def __init__(self, config=None):
        pass

    def detect(self, state):
        return "vq.quant_conv.weight" in state

    def build(self, state, args, *, source, registry=None):
        from glotok_bench.tokenizer.peers.llamagen import LlamaGenFormat

        plain = {k.removeprefix("vq."): v for k, v in state.items()}
        return LlamaGenFormat().build(plain, args, source=source, registry=registry)


def test_a_plugin_adds_a_tokenizer_format_through_the_hook(tmp_path):
    import importlib
    import types

    from glotok_bench.hookspecs import hookimpl
    from glotok_bench.registry import Component, Registry, new_plugin_manager

    plugin = types.ModuleType("renamed_format_plugin")
    plugin.glotok_tokenizer_formats = hookimpl(lambda: [Component("renamed", f"{__name__}:_RenamedLlamaGen")])
    manager = new_plugin_manager()
    for name in ("autoencoders", "quantizers", "residual_heads", "tokenizer_formats"):
        manager.register(importlib.import_module(f"glotok_builtin.{name}"), name=name)
    manager.register(plugin, name="renamed")
    registry = Registry(manager)
    state = llamagen_state()
    torch.save({"model": {f"vq.{k}": v for k, v in state.items()}}, tmp_path / "renamed.pt")
    tok, payload = load_tokenizer(tmp_path / "renamed.pt", registry=registry)
    assert payload["format"] == "renamed" and payload["family"] == "Renamed"
    images = _images()
    with torch.no_grad():
        assert (tok(images).reconstruction - llamagen_reference(state, images)[0]).abs().max() < 1e-4


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch hacked",))


@pytest.mark.parametrize("where", ["args", "optimizer", "model"])
def test_hostile_pickle_in_a_peer_file_is_still_refused(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    state = llamagen_state()
    payload = {"model": state, "optimizer": {}, "steps": 1, "args": argparse.Namespace(image_size=RES)}
    if where == "model":
        payload["model"] = {**state, "evil": _Hostile()}
    else:
        payload[where] = _Hostile() if where == "args" else {"state": _Hostile()}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        glotok_bench.load_tokenizer(tmp_path / "evil.pt")
    # Teacher sources read peer files through the same loader.
    from glotok_bench.teachers.peer_files import load_checkpoint

    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "hacked").exists()


def test_a_teacher_source_reads_a_codebook_from_a_peer_training_checkpoint(tmp_path):
    from glotok_bench.teachers.peer_files import load_checkpoint

    path = save_like_their_trainer(tmp_path / "peer.pt", llamagen_state())
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["quantize.embedding.weight"], llamagen_state()["quantize.embedding.weight"])
    assert loaded["args"].image_size == RES


# -- the harness: eval, tokenize, uniformity and labels in a grid cell ----------------------


@pytest.mark.slow
def test_a_peers_grid_evaluates_and_tokenizes_released_files_on_the_demo_data(tmp_path, demo_root):
    llamagen = save_like_their_trainer(tmp_path / "llamagen-vq16.pt", llamagen_state())
    fqgan = save_like_their_trainer(tmp_path / "fqgan-dual.pt", fqgan_state())
    base = tmp_path / "base.toml"
    base.write_text(f'''
extends = "{REPO / "tests" / "configs" / "tiny-glotok.toml"}"
cache_dir = "{tmp_path / "cache"}"
[data]
train_split = "val"
[data.dataset]
cache_dir = "{demo_root}"
[eval.uniformity]
repeats = 1
tsne_iterations = 250
''')
    grid = tmp_path / "peers.toml"
    grid.write_text(f'name = "peers-smoke"\nbase = "{base}"\nsteps = ["eval", "tokenize"]\n'
                    f'[axes]\n"tokenizer_checkpoint" = ["{llamagen}", "{fqgan}"]\n')
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", echo=lambda _: None)
    by_family = {}
    for record in outcome.records:
        assert record["status"] == "ok", record.get("error", {}).get("traceback")
        by_family[record["labels"]["family"]] = record
    assert set(by_family) == {"LlamaGen", "FQGAN-Dual"}
    for family, path, branch, codebook in (("LlamaGen", llamagen, "codes", "64"),
                                          ("FQGAN-Dual", fqgan, "semantic", "64+64")):
        record = by_family[family]
        labels = record["labels"]
        assert labels["method"] == family and labels["codebook"] == codebook
        assert labels["checkpoint_sha256"] == file_sha256(path)
        assert record["results"]["eval"]["checkpoint_sha256"] == file_sha256(path)
        metrics = record["metrics"]
        assert any(name.startswith("rfid") for name in metrics)
        uniformity = metrics["uniformity/density_cv"]
        assert uniformity["value"] > 0 and uniformity["protocol"]["branch"] == branch
        assert record["results"]["tokenize"]["count"] == 168
        manifest = json.loads((Path(record["results"]["tokenize"]["tokens"]) / "manifest.json").read_text())
        assert manifest["tokenizer_sha256"] == file_sha256(path) and manifest["grid"] == [16, 16]
    # Their leaderboard rows name the family and the exact file.
    import pandas as pd

    from glotok_bench.leaderboard.build import regenerate

    regenerate(tmp_path / "runs", tmp_path / "boards")
    table = pd.read_csv(tmp_path / "boards" / "reconstruction.csv", dtype=str).fillna("")
    measured = table[table["source"] == "measured"]
    for family, path in (("LlamaGen", llamagen), ("FQGAN-Dual", fqgan)):
        row = measured[measured["method"] == family]
        assert len(row) == 1 and file_sha256(path) in row.iloc[0]["other_labels"]


@pytest.fixture()
def counted_file_access(monkeypatch):
    """(reads, hashes): the files passed to the weights-only loader and to file_sha256."""
    import glotok_bench.tokenizer.checkpoint as checkpoint
    import glotok_bench.weights as weights

    reads, hashed = [], []
    safe_read, sha256 = checkpoint.torch_load_weights_only, weights.file_sha256

    def counted_read(file, **kwargs):
        reads.append(Path(file))
        return safe_read(file, **kwargs)

    def counted_sha256(file, *args, **kwargs):
        hashed.append(Path(file))
        return sha256(file, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "torch_load_weights_only", counted_read)
    monkeypatch.setattr(weights, "file_sha256", counted_sha256)
    return reads, hashed


def test_evaluating_a_peer_file_reads_it_once(tmp_path, monkeypatch, counted_file_access):
    """Released peer files are 0.3-1 GB: the eval command learns the config and the weights
    from one read of the file, still through the weights-only loader, and hashes it once."""
    from click.testing import CliRunner

    import glotok_bench.eval.evaluator as evaluator
    import glotok_bench.pipeline as pipeline
    from glotok_bench.cli import cli

    path = save_like_their_trainer(tmp_path / "llamagen.pt", llamagen_state())
    reads, hashed = counted_file_access
    evaluated = []

    def evaluation(tokenizer, dataset, options, **kwargs):
        evaluated.append(tokenizer.config)
        return evaluator.EvalResult(metrics={}, info={})

    # The data and the metrics are not what this test is about.
    monkeypatch.setattr(pipeline, "build_dataset", lambda config, split, **kwargs: [])
    monkeypatch.setattr(evaluator, "run_evaluation", evaluation)
    result = CliRunner().invoke(cli, ["eval", str(path), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert reads == [path] and hashed == [path]
    record = json.loads((tmp_path / "eval" / "record.json").read_text())
    assert record["labels"]["family"] == "LlamaGen"
    assert record["config"]["tokenizer"]["resolution"] == RES == evaluated[0].resolution


def test_tokenizing_with_a_peer_file_reads_and_hashes_it_once(tmp_path, monkeypatch, counted_file_access):
    from click.testing import CliRunner

    import glotok_bench.pipeline as pipeline
    from glotok_bench.cli import cli

    path = save_like_their_trainer(tmp_path / "llamagen.pt", llamagen_state())
    reads, hashed = counted_file_access
    images = [(torch.rand(3, RES, RES) * 2 - 1, label) for label in (0, 1, 0)]
    monkeypatch.setattr(pipeline, "build_dataset", lambda config, split, **kwargs: images)
    result = CliRunner().invoke(cli, ["tokenize", str(path), "--out", str(tmp_path / "tokens")])
    assert result.exit_code == 0, result.output
    assert reads == [path] and hashed == [path]
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert manifest["count"] == 3 and manifest["tokenizer_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
