"""Shared test set-up: no network, no user caches, and small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports timm/open_clip/huggingface_hub: set later, a missing file
# costs ~45 s of retries instead of failing at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights and torch hub caches point at empty folders, so nothing is found by accident,
    and data, teacher and statistics caches live in this session's temp folder, not $HOME."""
    home = tmp_path_factory.getbasetemp() / "home"
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("GLOTOK_WEIGHTS_DIR", str(home / "weights"))
    monkeypatch.setenv("GLOTOK_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("GLOTOK_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("GLOTOK_STATS_DIR", str(home / "fid-stats"))
    for name in list(os.environ):
        if name.startswith("GLOTOK_WEIGHTS_") and name != "GLOTOK_WEIGHTS_DIR":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, built once per test session into a temporary folder."""
    from glotok_bench.data.demo import ensure_demo_dataset

    # The same folder the default demo path resolves to under _isolated_caches: built once.
    root = tmp_path_factory.getbasetemp() / "home" / "data" / "glotok-demo-v1"
    ensure_demo_dataset(root)
    return root


@pytest.fixture()
def one_torch_thread():
    """Run a test on one torch thread (modules opt in with ``pytestmark``), then restore."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
