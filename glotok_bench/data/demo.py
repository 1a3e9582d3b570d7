"""The bundled demo dataset: real photographs that ship inside installed packages.

It is *not* ImageNet: 14 photos (scikit-image, scikit-learn and matplotlib sample data),
cut into deterministic random square crops at 32 and 64 px, one class per photo. Numbers
measured on it are for smoke tests and relative comparisons only.

Train and validation crops never share a pixel: each photo's right quarter is reserved
for validation crops and the rest for training crops. The set is built on first use into
a cache folder with a manifest of SHA-256 checksums, and verified against it on every use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from glotok_bench.data.imagefolder import ImageFolderDataset
from glotok_bench.data.preprocess import center_crop_resize
from glotok_bench.errors import DataError

DEMO_VERSION = "glotok-demo-v1"
RESOLUTIONS = (32, 64)
CROPS_PER_PHOTO = {"train": 48, "val": 12}
VAL_FRACTION = 0.25
DATA_DIR_ENV = "GLOTOK_DATA_DIR"


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pairs: left view

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook

        with Image.open(matplotlib.cbook.get_sample_data(filename, asfileobj=False)) as image:
            return np.asarray(image.convert("RGB"))

    return load


# class name -> loader; the order fixes the labels. All of these load without a network.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "china": _sklearn("china.jpg"),
    "coffee": _skimage("coffee"),
    "coins": _skimage("coins"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "moon": _skimage("moon"),
    "retina": _skimage("retina"),
    "rocket": _skimage("rocket"),
    "stereo_motorcycle": _skimage("stereo_motorcycle"),
}


def default_cache_dir() -> Path:
    base = Path(os.environ.get(DATA_DIR_ENV, Path.home() / ".cache" / "glotok_bench" / "data"))
    return base / DEMO_VERSION


def _rgb(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), "RGB")


def _region(photo: Image.Image, split: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the part of the photo a split may crop from."""
    boundary = round(photo.width * (1.0 - VAL_FRACTION))
    if split == "train":
        return 0, 0, boundary, photo.height
    return boundary, 0, photo.width, photo.height


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _crops(photo: Image.Image, split: str, seed: int) -> list[tuple[int, int, int]]:
    """Deterministic (left, top, side) squares inside the split's region."""
    left, top, right, bottom = _region(photo, split)
    largest = min(right - left, bottom - top)
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(CROPS_PER_PHOTO[split]):
        side = int(rng.integers(max(RESOLUTIONS), largest + 1)) if largest > max(RESOLUTIONS) else largest
        x = left + int(rng.integers(0, right - left - side + 1))
        y = top + int(rng.integers(0, bottom - top - side + 1))
        boxes.append((x, y, side))
    return boxes


def build_demo_dataset(target: Path) -> Path:
    """Write the demo set under ``target`` (atomically: built aside, then renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        entries = []
        for label, (name, load) in enumerate(PHOTOS.items()):
            photo = _rgb(load())
            for split_index, split in enumerate(("train", "val")):
                boxes = _crops(photo, split, seed=1000 * label + split_index)
                for crop_index, (x, y, side) in enumerate(boxes):
                    crop = photo.crop((x, y, x + side, y + side))
                    for resolution in RESOLUTIONS:
                        rel = f"{resolution}px/{split}/{name}/{crop_index:03d}.png"
                        data = _png_bytes(center_crop_resize(crop, resolution))
                        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                        (staging / rel).write_bytes(data)
                        entries.append(
                            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "source": name,
                             "box": [x, y, side]}
                        )
        manifest = {
            "version": DEMO_VERSION,
            "description": __doc__.strip().splitlines()[0],
            "photos": list(PHOTOS),
            "resolutions": list(RESOLUTIONS),
            "crops_per_photo": CROPS_PER_PHOTO,
            "files": entries,
            "sha256": _entries_digest(entries),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _entries_digest(entries: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{entry['path']} {entry['sha256']}\n".encode())
    return digest.hexdigest()


def verify_demo_dataset(root: Path) -> dict[str, Any] | None:
    """The manifest if every file matches its checksum, else ``None``."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != DEMO_VERSION:
        return None
    for entry in manifest["files"]:
        try:
            data = (root / entry["path"]).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return None
    return manifest


def ensure_demo_dataset(cache_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The verified demo folder, building (or rebuilding a damaged one) if needed."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    manifest = verify_demo_dataset(root)
    if manifest is None:
        build_demo_dataset(root)
        manifest = verify_demo_dataset(root)
        if manifest is None:
            raise DataError(f"the demo dataset built at {root} does not match its own manifest")
    return root, manifest


class DemoDataset(ImageFolderDataset):
    """The bundled demo photos (see module docstring); resolution must be 32 or 64."""

    @attrs.frozen(kw_only=True)
    class Config:
        cache_dir: str | None = None
        max_images: int | None = None
        horizontal_flip: bool = True
        seed: int = 0

    def __init__(self, config: Config, *, split: str, resolution: int, train: bool = False):
        if resolution not in RESOLUTIONS:
            raise DataError(f"the demo dataset exists at {RESOLUTIONS} px, not {resolution} px")
        if split not in CROPS_PER_PHOTO:
            raise DataError(f"the demo dataset has splits {tuple(CROPS_PER_PHOTO)}, not {split!r}")
        root, manifest = ensure_demo_dataset(Path(config.cache_dir) if config.cache_dir else None)
        self.manifest_sha256 = manifest["sha256"]
        folder_config = ImageFolderDataset.Config(
            root=str(root / f"{resolution}px"),
            max_images=config.max_images,
            horizontal_flip=config.horizontal_flip,
            seed=config.seed,
        )
        super().__init__(folder_config, split=split, resolution=resolution, train=train)

    def protocol(self) -> dict[str, Any]:
        return {
            **super().protocol(),
            "dataset": DEMO_VERSION,
            "manifest_sha256": self.manifest_sha256,
            "crop": "random square crops of bundled photos, then adm-center-crop",
        }
