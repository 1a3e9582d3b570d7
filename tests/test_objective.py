"""The tokenizer objective's options (issue 12): codebook init, what L_res trains, and
FQGAN's entropy and disentanglement terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glotok_bench.errors import ConfigError
from glotok_bench.histogram.api import histogram_relation_loss, relation_histogram
from glotok_bench.tokenizer.quantizers import (
    Codebook,
    DualQuantizer,
    disentanglement_loss,
    entropy_loss,
)
from glotok_bench.tokenizer.residual import TransformerResidualHead

# -- 12.1 codebook init -------------------------------------------------------------------


def test_cosine_codebooks_start_with_unit_rows_as_llamagen():
    torch.manual_seed(0)
    normalized = Codebook(512, 8, "cosine", 0.25)
    uniform = Codebook(512, 8, "cosine", 0.25, init="uniform")
    euclidean = Codebook(512, 8, "euclidean", 0.25)
    torch.testing.assert_close(
        normalized.embedding.weight.norm(dim=1), torch.ones(512), rtol=0, atol=1e-6
    )
    for book in (uniform, euclidean):  # taming's init: entries within +-1/n
        assert book.embedding.weight.abs().max() <= 1 / 512
    forced = Codebook(16, 4, "euclidean", 0.25, init="normalized")
    torch.testing.assert_close(forced.embedding.weight.norm(dim=1), torch.ones(16))


def _first_step_turn_degrees(book: Codebook, teacher_hist: torch.Tensor) -> float:
    """Largest angle a code turns in one Adam step (lr 2e-4) on L_hist."""
    weight = book.embedding.weight
    before = weight.detach().clone()
    optimizer = torch.optim.Adam([weight], lr=2e-4, betas=(0.9, 0.95))
    histogram_relation_loss(weight, teacher_hist).backward()
    optimizer.step()
    cosine = F.cosine_similarity(before, weight.detach(), dim=1).clamp(-1, 1)
    return math.degrees(torch.acos(cosine).max().item())


def test_normalized_init_keeps_the_first_histogram_step_small():
    # Why 12.1 matters: Adam moves each entry by about lr whatever the gradient's scale,
    # which is a large turn for a row of length ~1/n and a tiny one for a unit row.
    torch.manual_seed(1)
    teacher_hist = relation_histogram(torch.randn(300, 16))
    normalized = _first_step_turn_degrees(Codebook(256, 8, "cosine", 0.25), teacher_hist)
    uniform = _first_step_turn_degrees(
        Codebook(256, 8, "cosine", 0.25, init="uniform"), teacher_hist
    )
    assert normalized < 0.1
    assert uniform > 100 * normalized


# -- 12.2 what L_res trains ---------------------------------------------------------------


def _residual_gradients(gradient: str) -> dict[str, torch.Tensor | None]:
    """Gradients of L_res alone on the encoder output z, the codebook and the head."""
    torch.manual_seed(2)
    book = Codebook(16, 4, "cosine", 0.25)
    head = TransformerResidualHead(
        TransformerResidualHead.Config(width=8, heads=2, gradient=gradient), channels=4
    )
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    branch, _, _ = book(z)
    residual = head(branch.quantized)
    loss = head.loss(branch.continuous, branch.quantized, residual, code=branch.code)
    loss.backward()
    return {
        "loss": loss.detach(),
        "z": z.grad,
        "codebook": book.embedding.weight.grad,
        "head": head.proj_out.weight.grad,
    }


def _nonzero(grad: torch.Tensor | None) -> bool:
    return grad is not None and grad.abs().sum().item() > 0


def test_residual_gradient_readings_have_one_value_and_train_different_parts():
    code = _residual_gradients("code")
    straight = _residual_gradients("straight-through")
    head_only = _residual_gradients("head")
    torch.testing.assert_close(code["loss"], straight["loss"])
    torch.testing.assert_close(code["loss"], head_only["loss"])
    # code: codebook + head, never the encoder
    assert not _nonzero(code["z"]) and _nonzero(code["codebook"]) and _nonzero(code["head"])
    # straight-through: the encoder too, and no codebook
    assert _nonzero(straight["z"]) and not _nonzero(straight["codebook"])
    assert _nonzero(straight["head"])
    # head: only the head
    assert not _nonzero(head_only["z"]) and not _nonzero(head_only["codebook"])
    assert _nonzero(head_only["head"])


def test_straight_through_residual_opposes_the_commitment_term_at_head_init():
    """The issue's analysis: with Z_res = 0, d L_res / dZ = -d L_commit / dZ * 2 / beta."""
    torch.manual_seed(3)
    book = Codebook(16, 4, "cosine", beta=0.25)
    head = TransformerResidualHead(
        TransformerResidualHead.Config(width=8, heads=2, gradient="straight-through"), channels=4
    )
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    branch, _, _ = book(z)
    commit = book.beta * F.mse_loss(branch.code.detach(), branch.continuous)
    (commit_grad,) = torch.autograd.grad(commit, z, retain_graph=True)
    residual = head(branch.quantized)
    res = head.loss(branch.continuous, branch.quantized, residual, code=branch.code)
    (res_grad,) = torch.autograd.grad(0.5 * res, z)  # lambda_res = 0.5
    cosine = F.cosine_similarity(res_grad.flatten(), commit_grad.flatten(), dim=0)
    assert cosine.item() == pytest.approx(-1.0, abs=1e-5)
    assert (res_grad.norm() / commit_grad.norm()).item() == pytest.approx(2.0, rel=1e-4)


def test_code_reading_needs_the_raw_codes():
    head = TransformerResidualHead(
        TransformerResidualHead.Config(width=8, heads=2, gradient="code"), channels=4
    )
    zq = torch.randn(1, 4, 2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="raw codes"):
        head.loss(torch.randn(1, 4, 2, 2), zq, head(zq))


# -- 12.3 FQGAN's entropy and disentanglement terms -----------------------------------------


def test_entropy_loss_rewards_confident_spread_assignments():
    n = 8
    confident_spread = torch.eye(n) * 10.0  # each row picks its own code
    confident_collapsed = torch.zeros(n, n)
    confident_collapsed[:, 0] = 10.0  # every row picks code 0
    undecided = torch.zeros(n, n)
    spread = entropy_loss(confident_spread, temperature=0.01).item()
    collapsed = entropy_loss(confident_collapsed, temperature=0.01).item()
    flat = entropy_loss(undecided, temperature=0.01).item()
    assert spread == pytest.approx(-math.log(n), abs=1e-3)
    assert collapsed == pytest.approx(0.0, abs=1e-3)
    assert flat == pytest.approx(0.0, abs=1e-3)


def test_entropy_loss_matches_its_definition():
    torch.manual_seed(4)
    affinity = torch.randn(20, 6)
    probs = F.softmax(affinity / 0.5, dim=-1)
    per_sample = torch.distributions.Categorical(probs=probs).entropy().mean()
    mean = probs.mean(0)
    expected = per_sample + (mean * torch.log(mean + 1e-5)).sum()
    torch.testing.assert_close(entropy_loss(affinity, 0.5), expected)


def test_disentanglement_is_mean_squared_cosine():
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).repeat(1, 1, 2, 1)
    b = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).T.reshape(1, 2, 2, 1)  # orthogonal, parallel
    assert disentanglement_loss(a, b).item() == pytest.approx(0.5)


def _dual(**options) -> DualQuantizer:
    config = DualQuantizer.Config(semantic_size=16, visual_size=24, code_dim=4, **options)
    return DualQuantizer(config, in_channels=6)


def test_dual_quantizer_returns_the_weighted_fqgan_terms_only_when_asked():
    torch.manual_seed(5)
    features = torch.randn(2, 6, 3, 3)
    assert _dual()(features).regularizers == {}
    quantizer = _dual(entropy_weight=0.03, disentangle_weight=0.1)
    out = quantizer(features)
    assert set(out.regularizers) == {"entropy", "disentangle"}
    expected_entropy = 0.0
    for name, branch in out.branches.items():
        flat = branch.continuous.permute(0, 2, 3, 1).reshape(-1, 4)
        codes = F.normalize(quantizer.codebook_weight(name), dim=-1)
        squared_distance = torch.cdist(flat, codes).square()
        expected_entropy += 0.03 * entropy_loss(-squared_distance, 0.01)
    torch.testing.assert_close(out.regularizers["entropy"], expected_entropy, atol=1e-4, rtol=1e-4)
    semantic, visual = out.branches["semantic"].quantized, out.branches["visual"].quantized
    torch.testing.assert_close(
        out.regularizers["disentangle"], 0.1 * disentanglement_loss(semantic, visual)
    )
    quantizer.eval()  # a training objective: evaluation does not pay for it
    assert quantizer(features).regularizers == {}


def test_disentanglement_trains_the_adapters_not_the_codebooks():
    torch.manual_seed(6)
    quantizer = _dual(disentangle_weight=0.1)
    quantizer(torch.randn(2, 6, 3, 3)).regularizers["disentangle"].backward()
    assert quantizer.adapters["semantic"].weight.grad.abs().sum() > 0
    assert quantizer.codebook_weight("semantic").grad is None


def test_fqgan_term_weights_are_validated():
    with pytest.raises(ConfigError, match="entropy_weight"):
        _dual(entropy_weight=-1.0)
    with pytest.raises(ConfigError, match="entropy_temperature"):
        _dual(entropy_temperature=0.0)


# -- 12.4 augmentation ------------------------------------------------------------------------


@pytest.fixture()
def half_black_half_white(tmp_path):
    """One 64x32 image, left half black and right half white, in an image folder."""
    import numpy as np
    from PIL import Image

    from glotok_bench.data.imagefolder import ImageFolderDataset

    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = 255
    (tmp_path / "train" / "only").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "train" / "only" / "0.png")
    config = ImageFolderDataset.Config(root=str(tmp_path))
    return ImageFolderDataset(config, split="train", resolution=16, train=True)


def test_crops_are_keyed_on_seed_epoch_and_index(half_black_half_white):
    from glotok_bench.train.augment import AugmentedImages

    augmented = AugmentedImages(half_black_half_white, seed=0, scale=(1.0, 1.25))
    again = AugmentedImages(half_black_half_white, seed=0, scale=(1.0, 1.25))
    views = [augmented[(0, epoch)][0] for epoch in range(12)]
    for epoch in (0, 5):
        assert torch.equal(again[(0, epoch)][0], views[epoch])
    assert len({tuple(view.flatten().tolist()) for view in views}) > 3  # fresh each epoch
    other_seed = AugmentedImages(half_black_half_white, seed=1, scale=(1.0, 1.25))
    assert any(not torch.equal(other_seed[(0, e)][0], views[e]) for e in range(12))


def test_crops_reach_the_ends_of_the_long_side_as_upstream(half_black_half_white):
    """A centre crop of this image is always half black, half white; LlamaGen's random
    crop of the resized file reaches all-black and all-white squares."""
    from glotok_bench.train.augment import AugmentedImages

    augmented = AugmentedImages(half_black_half_white, seed=0, scale=(1.0, 1.25))
    means = [augmented[(0, epoch)][0].mean().item() for epoch in range(40)]
    assert min(means) < -0.95 and max(means) > 0.95
    image, label, index, problem = augmented[(0, 0)]
    assert image.shape == (3, 16, 16) and (label, index, problem) == (0, 0, "")


def test_flips_are_fresh_and_fair():
    from glotok_bench.train.augment import augmentation_rng, random_crop_tensor

    image = torch.linspace(-1, 1, 8).repeat(3, 8, 1)  # brightness rises left to right
    flipped = [
        random_crop_tensor(image, (1.0, 1.0), augmentation_rng(0, epoch, 3))[0, 0, 0].item() > 0
        for epoch in range(200)
    ]
    assert 0.35 < sum(flipped) / len(flipped) < 0.65
    # scale (1, 1) on a square image: no resize, no crop, only the flip
    view = random_crop_tensor(image, (1.0, 1.0), augmentation_rng(0, 0, 3))
    assert torch.equal(view, image) or torch.equal(view, image.flip(-1))


def test_augmented_batches_resume_exactly():
    from glotok_bench.train.data import image_batches

    images = torch.rand(10, 3, 8, 8) * 2 - 1
    data = torch.utils.data.TensorDataset(images, torch.zeros(10, dtype=torch.long))
    options = dict(batch_size=4, seed=3, augment="crop-flip", crop_scale=(1.0, 1.5))
    full = image_batches(data, start_step=0, **options)
    uninterrupted = [next(full) for _ in range(6)]
    resumed = image_batches(data, start_step=4, **options)
    for step in (4, 5):
        torch.testing.assert_close(next(resumed), uninterrupted[step], rtol=0, atol=0)
    plain = next(image_batches(data, start_step=0, batch_size=4, seed=3))
    assert not torch.equal(plain, uninterrupted[0])  # augmentation did something


def test_augmentation_needs_a_map_style_dataset():
    from glotok_bench.train.data import image_batches

    with pytest.raises(ConfigError, match="map-style"):
        image_batches(
            iter([torch.zeros(2, 3, 8, 8)]), batch_size=2, seed=0, start_step=0, augment="crop-flip"
        )
