"""Semantic supervision components: none, histogram (global) and local-infonce (local)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_teachers import TINY_CLIP, TINY_DINOV2, _register_tiny_dinov2, clip_weights  # noqa: F401

import glotok_bench
from glotok_bench.errors import ConfigError, MissingWeightsError
from glotok_bench.supervision.histogram import HistogramSupervision
from glotok_bench.supervision.local_infonce import LocalInfoNCESupervision
from glotok_bench.supervision.none import NoSupervision
from glotok_bench.teachers.codebook_file import FileTeacher


@pytest.fixture()
def teacher_file(tmp_path):
    """A 32-d teacher codebook, built and cached the way a teacher source does it."""
    torch.save(
        {"centres": torch.randn(300, 32, generator=torch.Generator().manual_seed(0))},
        tmp_path / "t.pt",
    )
    teacher = FileTeacher(FileTeacher.Config(path=str(tmp_path / "t.pt"), key="centres"))
    teacher.build(tmp_path / "cache")
    return teacher.cache_file(tmp_path / "cache")


def test_none_is_a_zero_loss():
    supervision = NoSupervision(NoSupervision.Config(), semantic_dim=8)
    codebook = torch.randn(16, 8, requires_grad=True)
    loss = supervision.loss(codebook, torch.randn(2, 8, 4, 4), torch.zeros(2, 3, 16, 16))
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    assert supervision.describe() == {"name": "none"}


def test_histogram_supervision_is_l_hist_against_the_teacher_file(teacher_file):
    config = HistogramSupervision.Config(teacher_file=str(teacher_file))
    supervision = HistogramSupervision(config, semantic_dim=8)
    cached = FileTeacher(FileTeacher.Config(path=str(teacher_file))).compute(torch.device("cpu"))
    expected_hist = glotok_bench.relation_histogram(cached)
    torch.testing.assert_close(supervision.teacher_hist, expected_hist)

    codebook = torch.randn(64, 8, requires_grad=True)  # the student's dimension differs: fine
    loss = supervision.loss(codebook, None, None)
    torch.testing.assert_close(loss, glotok_bench.histogram_relation_loss(codebook, expected_hist))
    loss.backward()
    assert codebook.grad.abs().sum() > 0
    assert "teacher_hist" not in supervision.state_dict()
    record = supervision.describe()
    assert record["name"] == "histogram" and record["teacher_shape"] == [300, 32]
    assert len(record["teacher_sha256"]) == 64


def test_histogram_supervision_options_reach_the_loss(teacher_file):
    literal = HistogramSupervision(
        HistogramSupervision.Config(
            teacher_file=str(teacher_file), normalize="l2", reduction="mean", bins=20
        ),
        semantic_dim=8,
    )
    assert literal.teacher_hist.shape == (20,)
    assert literal.teacher_hist.norm().item() == pytest.approx(1.0, abs=1e-6)
    codebook = torch.randn(40, 8)
    expected = glotok_bench.histogram_relation_loss(
        codebook, literal.teacher_hist, normalize="l2", reduction="mean"
    )
    torch.testing.assert_close(literal.loss(codebook), expected)


def test_histogram_supervision_needs_a_teacher():
    with pytest.raises(ConfigError, match="teacher_file"):
        HistogramSupervision(HistogramSupervision.Config(), semantic_dim=8)


@pytest.fixture(scope="module")
def tiny_dinov2():
    _register_tiny_dinov2()
    return TINY_DINOV2


def _local(tiny_dinov2, **overrides) -> LocalInfoNCESupervision:
    options = dict(
        backbone="dinov2",
        model=tiny_dinov2,
        image_size=28,
        allow_random_init=True,
        hidden_dim=32,
        depth=1,
        heads=2,
        grid_size=8,
    )
    options.update(overrides)
    return LocalInfoNCESupervision(LocalInfoNCESupervision.Config(**options), semantic_dim=4)


def test_local_infonce_trains_its_head_against_a_frozen_teacher(tiny_dinov2):
    torch.manual_seed(0)
    # Random teachers' class tokens are alike: a sharper temperature than FQGAN's 1
    # gives the test's six images something to tell apart.
    supervision = _local(tiny_dinov2, temperature=0.1)
    # DINOv2 initialises LayerScale at 1e-5, so a random teacher gives every image the
    # same CLS token and nothing to contrast; open the residual branches.
    for block in supervision.teacher.model.blocks:
        block.ls1.gamma.data.fill_(1.0)
        block.ls2.gamma.data.fill_(1.0)
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    features = torch.randn(6, 4, 8, 8)
    teacher_before = [p.clone() for p in supervision.teacher.parameters()]
    optimizer = torch.optim.Adam(supervision.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = supervision.loss(None, features, images)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # Only the head (and its projection to the teacher's width) is trained and
    # checkpointed; the teacher stays as loaded.
    assert all(name.startswith(("head.", "project.")) for name in supervision.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(teacher_before, supervision.teacher.parameters(), strict=True)
    )
    assert supervision.describe()["teacher_width"] == 64


def test_local_infonce_gradient_reaches_the_quantized_features(tiny_dinov2):
    supervision = _local(tiny_dinov2)
    features = torch.randn(3, 4, 8, 8, requires_grad=True)
    supervision.loss(None, features, torch.zeros(3, 3, 16, 16)).backward()
    assert features.grad.abs().sum() > 0


def test_local_infonce_without_weights_is_refused(tiny_dinov2):
    with pytest.raises(MissingWeightsError, match="weights_path"):
        _local(tiny_dinov2, allow_random_init=False)


@pytest.mark.parametrize("kind", ["histogram", "local-infonce"])
def test_trainer_runs_each_supervision_on_the_same_tokenizer(
    kind, teacher_file, tiny_dinov2, tmp_path
):
    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import LossConfig
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import train

    tokenizer = load_tokenizer_config(Path(__file__).parent / "configs" / "tiny-16.toml")
    if kind == "histogram":
        supervision = HistogramSupervision(
            HistogramSupervision.Config(teacher_file=str(teacher_file)), semantic_dim=4
        )
    else:
        supervision = _local(tiny_dinov2)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    result = train(
        tokenizer,
        LossConfig(perceptual=False, adversarial_weight=0.0),
        TrainConfig(max_steps=2, batch_size=4, progress=False, checkpoint_every=2),
        torch.utils.data.TensorDataset(images, torch.zeros(8, dtype=torch.long)),
        run_dir=tmp_path / "run",
        registry=standalone_registry(),
        supervision=supervision,
    )
    assert result.supervision["name"] == kind
    assert torch.isfinite(torch.as_tensor(result.losses["semantic"]))
    checkpoint = torch.load(result.checkpoint, weights_only=True)
    saved = (
        checkpoint["training"]["supervision"]
        if "training" in checkpoint
        else checkpoint["supervision"]
    )
    assert all(not name.startswith("teacher") for name in saved)


def test_supervision_file_outside_the_cache_is_read_by_key(tmp_path):
    save_file({"semantic": torch.randn(50, 8)}, str(tmp_path / "codes.safetensors"))
    supervision = HistogramSupervision(
        HistogramSupervision.Config(
            teacher_file=str(tmp_path / "codes.safetensors"), teacher_key="semantic"
        ),
        semantic_dim=8,
    )
    assert supervision.teacher_hist.sum().item() == pytest.approx(1.0, abs=1e-6)


# -- local supervision is FQGAN's (issue 12.7) ------------------------------------------------

def test_clip_target_is_the_class_token_before_ln_post_of_a_nearest_resized_input(request):
    import torch.nn.functional as F

    from glotok_bench.teachers.backbones import load_backbone

    weights = request.getfixturevalue("clip_weights")
    backbone = load_backbone("clip", TINY_CLIP, str(weights), resize="nearest")
    images = torch.rand(3, 3, 20, 20) * 2 - 1
    visual = backbone.visual
    # By hand: FQGAN's ScalingLayer ([-1, 1] -> [0, 1], nearest resize, OpenAI
    # normalisation), then the tower up to its last block, class token, no ln_post.
    resized = F.interpolate((images + 1) / 2, size=(56, 56), mode="nearest")
    normalised = (resized - backbone.mean) / backbone.std
    tokens = visual.transformer(visual._embeds(normalised))
    torch.testing.assert_close(backbone.class_token(images), tokens[:, 0])
    assert not torch.allclose(backbone.class_token(images), visual.ln_post(tokens)[:, 0])
    assert backbone.width == 32


def test_dinov2_target_is_the_class_token_before_the_final_norm(tiny_dinov2):
    from glotok_bench.teachers.backbones import load_backbone

    backbone = load_backbone("dinov2", tiny_dinov2, "", image_size=28, allow_random_init=True)
    images = torch.rand(2, 3, 28, 28) * 2 - 1
    model = backbone.model
    x = model._pos_embed(model.patch_embed(backbone.prepare(images)))
    for block in model.blocks:
        x = block(x)
    torch.testing.assert_close(backbone.class_token(images), x[:, 0])


def test_infonce_is_fqgans_exp_cosine_form_at_temperature_one():
    from glotok_bench.supervision.local_infonce import info_nce

    torch.manual_seed(7)
    prediction, target = torch.randn(5, 12), torch.randn(5, 12)
    p = prediction / prediction.norm(dim=-1, keepdim=True)
    t = target / target.norm(dim=-1, keepdim=True)
    scores = (p @ t.T).exp()
    fqgan = -(scores.diag() / scores.sum(1)).log().mean()
    torch.testing.assert_close(info_nce(prediction, target, 1.0), fqgan)


def test_fqgan_head_has_fqgans_size():
    """Width 1024, three blocks, class token + 16x16 positions, MLP lift from d = 8."""
    from glotok_bench.supervision.local_infonce import ClassTokenHead

    with torch.device("meta"):
        head = ClassTokenHead(8, width=1024, depth=3, heads=8, grid_size=16)
    w = 1024
    block = 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    expected = (8 * w + w) + (w * w + w) + w + 257 * w + 2 * w + 3 * block + 2 * w
    assert sum(p.numel() for p in head.parameters()) == expected


def test_local_head_refuses_another_token_grid(tiny_dinov2):
    supervision = _local(tiny_dinov2)  # grid_size 8
    with pytest.raises(ConfigError, match="grid_size = 4"):
        supervision.loss(None, torch.randn(2, 4, 4, 4), torch.zeros(2, 3, 16, 16))


def test_local_supervision_defaults_are_fqgans():
    config = LocalInfoNCESupervision.Config()
    assert (config.backbone, config.model, config.resize) == ("clip", "ViT-L-14", "nearest")
    assert (config.hidden_dim, config.depth, config.grid_size, config.temperature) == (
        1024,
        3,
        16,
        1.0,
    )
