"""Run labels decide which leaderboard row a record lands in; they come from each
component's interface, so a plugin component is labelled like a built-in one."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from glotok_bench.config import structure
from glotok_bench.hookspecs import hookimpl
from glotok_bench.pipeline import run_labels
from glotok_bench.registry import Component, build_registry, using_registry
from glotok_bench.runconfig import RunConfig

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted((REPO / "leaderboards" / "records").glob("*/*/record.json"))


@pytest.mark.parametrize("record_path", RECORDS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_a_committed_record_keeps_its_leaderboard_row(record_path):
    record = json.loads(record_path.read_text())
    config = structure(RunConfig, record["config"], source=str(record_path))
    labels = run_labels(config)
    assert labels == {key: record["labels"][key] for key in labels}


def _config(**sections) -> RunConfig:
    return structure(RunConfig, sections)


def test_labels_name_the_codebooks_and_the_teacher_only_when_one_is_used():
    glotok = _config(teacher={"name": "patch-kmeans", "k": 252, "clustering": "per-class"})
    labels = run_labels(glotok)
    assert labels["codebook"] == "4096+12288" and labels["supervision"] == "histogram"
    assert labels["teacher"] == "patch-kmeans(clustering=per-class, k=252)"
    assert labels["lambda_hist"] == 0.01
    # Where the teacher's inputs live is not part of what it is.
    moved = _config(teacher={"name": "patch-kmeans", "k": 252, "clustering": "per-class", "data_root": "/x"})
    assert run_labels(moved)["teacher"] == labels["teacher"]
    given = _config(supervision={"name": "histogram", "teacher_file": "/t/dino.safetensors"})
    assert run_labels(given)["teacher"] == "file:dino.safetensors"
    local = _config(supervision={"name": "local-infonce"}, loss={"semantic_weight": 0.5})
    assert (run_labels(local)["teacher"], run_labels(local)["lambda_hist"]) == ("-", 0.0)
    unsupervised = _config(loss={"semantic_weight": 0.0})
    assert (run_labels(unsupervised)["supervision"], run_labels(unsupervised)["teacher"]) == ("none", "-")
    vq = _config(tokenizer={"quantizer": {"name": "vq", "codebook_size": 1024}})
    assert run_labels(vq)["codebook"] == "1024"
    random_encoder = _config(teacher={"name": "dinov2-kmeans", "allow_random_init": True})
    assert run_labels(random_encoder)["teacher"] == "dinov2-kmeans(RANDOM-INIT encoder)"


class _ThreeBookQuantizer:
    @attrs.frozen(kw_only=True)
    class Config:
        sizes: tuple[int, ...] = (8, 8, 16)
        code_dim: int = 6

        def codebook_label(self) -> str:
            return "x".join(map(str, self.sizes))

        def semantic_dim(self) -> int:
            return self.code_dim


class _PlainTeacher:  # no label(): named by its name and changed options
    @attrs.frozen(kw_only=True)
    class Config:
        size: int = 64
        seed: int = 0

    def __init__(self, config):
        self.config = config


class _Plugin:
    @hookimpl
    def glotok_quantizers(self):
        return [Component("three-book", f"{__name__}:_ThreeBookQuantizer")]

    @hookimpl
    def glotok_teachers(self):
        return [Component("plain", f"{__name__}:_PlainTeacher")]


def test_plugin_components_label_themselves():
    with using_registry(build_registry(extra_plugins={"test-labels": _Plugin()})):
        config = _config(tokenizer={"quantizer": {"name": "three-book"}}, teacher={"name": "plain", "seed": 3})
        labels = run_labels(config)
    assert labels["quantizer"] == "three-book" and labels["codebook"] == "8x8x16"
    assert labels["teacher"] == "plain(seed=3)"
