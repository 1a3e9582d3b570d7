from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from PIL import Image

from glotok_bench.data.demo import DemoDataset, build_demo_dataset, ensure_demo_dataset
from glotok_bench.data.imagefolder import ImageFolderDataset, SkippedImages
from glotok_bench.data.loaders import ShardSampler, make_loader, readable_batches
from glotok_bench.data.preprocess import center_crop_resize
from glotok_bench.errors import DataError


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_demo_dataset_is_byte_identical_when_rebuilt(demo_root, tmp_path):
    again = build_demo_dataset(tmp_path / "again")
    assert _tree_digest(again) == _tree_digest(demo_root)


def test_demo_train_and_val_crops_share_no_pixels(demo_root):
    import json

    manifest = json.loads((demo_root / "manifest.json").read_text())
    boxes = {}
    for entry in manifest["files"]:
        split = entry["path"].split("/")[1]
        boxes.setdefault((entry["source"], split), set()).add(tuple(entry["box"]))
    for (source, split), train_boxes in boxes.items():
        if split != "train":
            continue
        for tx, ty, ts in train_boxes:
            for vx, vy, vs in boxes[(source, "val")]:
                overlap_x = min(tx + ts, vx + vs) - max(tx, vx)
                overlap_y = min(ty + ts, vy + vs) - max(ty, vy)
                assert overlap_x <= 0 or overlap_y <= 0, (source, (tx, ty, ts), (vx, vy, vs))


def test_damaged_demo_is_detected_and_rebuilt(tmp_path):
    root, manifest = ensure_demo_dataset(tmp_path / "demo")
    victim = root / manifest["files"][5]["path"]
    original = victim.read_bytes()
    victim.write_bytes(b"garbage")
    root2, manifest2 = ensure_demo_dataset(tmp_path / "demo")
    assert victim.read_bytes() == original and manifest2["sha256"] == manifest["sha256"]


def test_demo_dataset_yields_normalised_images_and_protocol(demo_root):
    dataset = DemoDataset(DemoDataset.Config(cache_dir=str(demo_root)), split="val", resolution=32)
    image, label, index, problem = dataset[0]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    assert problem == "" and index == 0 and 0 <= label < dataset.num_classes == 14
    assert len(dataset) == 14 * 12
    protocol = dataset.protocol()
    assert protocol["dataset"] == "glotok-demo-v1" and protocol["split"] == "val" and protocol["count"] == 168
    with pytest.raises(DataError, match="32, 64"):
        DemoDataset(DemoDataset.Config(cache_dir=str(demo_root)), split="val", resolution=256)


def _folder(tmp_path, n_good=3, n_bad=2):
    root = tmp_path / "data" / "val"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_good):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "a" / f"{i}.png")
    for i in range(n_bad):
        (root / "b" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return tmp_path / "data"


def test_corrupt_images_are_skipped_counted_and_named(tmp_path):
    dataset = ImageFolderDataset(ImageFolderDataset.Config(root=str(_folder(tmp_path))), split="val", resolution=16)
    skipped = SkippedImages()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(readable_batches(make_loader(dataset, batch_size=4), skipped))
    assert sum(len(b["images"]) for b in batches) == 3
    assert skipped.as_record()["count"] == 2
    assert all("bad" in p for p in skipped.paths)
    assert sum("skipping unreadable image" in str(w.message) for w in caught) == 2


def test_dataset_with_no_readable_image_is_an_error(tmp_path):
    root = _folder(tmp_path, n_good=0, n_bad=3)
    dataset = ImageFolderDataset(ImageFolderDataset.Config(root=str(root)), split="val", resolution=16)
    with pytest.raises(DataError, match="no readable image"):
        list(readable_batches(make_loader(dataset, batch_size=2), SkippedImages()))
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(ImageFolderDataset.Config(root=str(root)), split="train", resolution=16)


def test_shards_partition_the_data_in_order():
    shards = [list(ShardSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards[0] == [0, 3, 6, 9] and [len(ShardSampler(10, rank=r, world_size=3)) for r in range(3)] == [4, 3, 3]
    assert sorted(sum(shards, [])) == list(range(10))


def test_center_crop_keeps_the_centre_and_drops_the_sides():
    array = np.zeros((300, 600, 3), dtype=np.uint8)
    array[:, 150:450] = (200, 10, 10)  # the centre square is red, the sides black
    crop = np.asarray(center_crop_resize(Image.fromarray(array), 64))
    assert crop.shape == (64, 64, 3)
    interior = crop[:, 2:-2].astype(int)  # bicubic rings over the outer two columns
    assert np.abs(interior - (200, 10, 10)).max() <= 5
