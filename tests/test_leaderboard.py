"""Leaderboards rebuilt from run records: determinism, protocol separation, paper rows,
seed aggregation, and what happens to corrupt, failed and interrupted inputs."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from glotok_bench.leaderboard.build import format_number, regenerate
from glotok_bench.leaderboard.cli import leaderboard
from glotok_bench.records import SCHEMA

REAL = "inception-v3-compat"
STANDIN = "standin-randconv-v1"
SFID = f"rfid@{STANDIN}"


def data_protocol(count: int = 64, resolution: int = 64) -> dict:
    return {
        "dataset": "glotok-demo-v1", "split": "val", "count": count, "resolution": resolution,
        "crop": "adm-center-crop", "manifest_sha256": "ab" * 32,
    }


def write_record(root: Path, name: str, *, status: str = "ok", labels: dict | None = None,
                 metrics: dict | None = None, train: dict | None = None, kind: str = "grid-cell") -> Path:
    record = {
        "schema": SCHEMA, "kind": kind, "run_id": name, "status": status,
        "created": "2025-01-01T00:00:00+00:00",
        "config": {"tokenizer": {"resolution": 64}, "train": {"batch_size": 8}},
        "labels": {"method": "GloTok", "quantizer": "dual", "codebook": "4096+12288", "supervision": "histogram",
                   "teacher": "file", "lambda_hist": 0.01, "residual": "transformer", "seed": 0, **(labels or {})},
        "metrics": metrics or {},
        "results": {"train": train} if train else {},
        "environment": {"versions": {}, "host": "test", "platform": "test"},
    }
    path = root / name / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


def recon_metrics(rfid: float, psnr: float = 20.0, extractor: str = STANDIN, count: int = 64) -> dict:
    fid_key = "rfid" if extractor == REAL else f"rfid@{extractor}"
    return {
        fid_key: {"value": rfid, "protocol": {**data_protocol(count), "extractor": extractor}},
        "psnr": {"value": psnr, "protocol": {**data_protocol(count), "reduction": "mean over images"}},
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def measured(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["source"] == "measured"]


def make_runs(root: Path) -> Path:
    """A small runs folder: a lambda_hist sweep with seeds, a failed cell, training cost."""
    train = {"steps": 300, "images_per_s": 20.0, "step_time_s": 0.4, "peak_memory_bytes": 512 * 2**20,
             "wall_time_s": 60.0, "device": "cpu"}
    for seed, rfid in enumerate((10.0, 11.0, 12.0)):
        write_record(root, f"hist-001-s{seed}", labels={"seed": seed, "lambda_hist": 0.01},
                     metrics=recon_metrics(rfid, psnr=20.0 + seed), train=train)
    write_record(root, "hist-010", labels={"lambda_hist": 0.1}, metrics=recon_metrics(14.0), train=train)
    write_record(root, "none", labels={"supervision": "none", "lambda_hist": 0.0},
                 metrics=recon_metrics(15.0), train={**train, "images_per_s": 25.0})
    write_record(root, "broken-cell", status="failed", metrics=recon_metrics(0.1))
    write_record(root, "uniform", metrics={
        "uniformity/density_cv": {"value": 0.3, "protocol": {**data_protocol(), "branch": "semantic", "points": 500}},
        "uniformity/density_cv_std": {"value": 0.02, "protocol": {**data_protocol(), "branch": "semantic", "points": 500}},
        "density_cv": {"value": 0.5, "std": 0.01, "repeats": 3,
                       "protocol": {**data_protocol(), "branch": "visual", "points": 500}},
    })
    return root


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    return make_runs(tmp_path / "runs")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """make_runs' leaderboards, built once for the tests that only read them."""
    root = tmp_path_factory.mktemp("built")
    outcome = regenerate(make_runs(root / "runs"), root / "lb")
    return root / "lb", outcome


def test_regenerating_twice_gives_identical_bytes(built, tmp_path):
    first, second = built[0], tmp_path / "b"
    regenerate(built[1].collection.roots[0], second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"reconstruction.csv", "generation.csv", "uniformity.csv", "ablation_histogram.csv",
            "ablation_components.csv", "ablation_teachers.csv", "training_cost.csv", "README.md",
            "rfid_vs_lambda_hist.png", "training_throughput.png"} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_row_order_does_not_depend_on_the_order_records_are_read(built, tmp_path):
    # Same records under other folder names: iter_records reads them in another order.
    shuffled = tmp_path / "shuffled"
    for i, path in enumerate(sorted(built[1].collection.roots[0].rglob("record.json"), reverse=True)):
        (shuffled / f"{i:02d}").mkdir(parents=True)
        (shuffled / f"{i:02d}" / "record.json").write_bytes(path.read_bytes())
    regenerate(shuffled, tmp_path / "b")
    for name in ("reconstruction.csv", "ablation_histogram.csv", "uniformity.csv", "training_cost.csv"):
        assert (built[0] / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_corrupt_record_is_reported_by_path_and_skipped(runs, tmp_path):
    bad = runs / "truncated" / "record.json"
    bad.parent.mkdir()
    bad.write_text('{"schema": "glotok-bench/run-record/1", "kind": "ev')
    wrong = write_record(runs, "bad-metric", metrics={"rfid": {"value": "twelve", "protocol": {}}})

    result = CliRunner().invoke(leaderboard, ["regenerate", "--records", str(runs), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    assert f"skipped corrupt record {bad}" in result.output
    assert f"skipped corrupt record {wrong}" in result.output
    rows = read_csv(tmp_path / "lb" / "reconstruction.csv")
    assert not any("bad-metric" in r["run_ids"] for r in rows)
    assert len(measured(rows)) == 3  # the good records still made it
    readme = (tmp_path / "lb" / "README.md").read_text()
    # paths are shown under their records folder's name, independent of the checkout's location
    assert f"`{runs.name}/truncated/record.json`: corrupt" in readme
    assert f"`{runs.name}/bad-metric/record.json`: corrupt" in readme


def test_standin_and_real_extractor_rows_never_share_a_ranking(tmp_path):
    root = tmp_path / "runs"
    # The stand-in's rFID is lower than the real one's: ranked together it would win.
    write_record(root, "real", metrics=recon_metrics(5.0, extractor=REAL))
    write_record(root, "standin", labels={"method": "Baseline"}, metrics=recon_metrics(1.0, extractor=STANDIN))
    write_record(root, "both", labels={"method": "Both"},
                 metrics={**recon_metrics(7.0, extractor=REAL), **recon_metrics(3.0, extractor=STANDIN)})
    regenerate(root, tmp_path / "lb")
    rows = measured(read_csv(tmp_path / "lb" / "reconstruction.csv"))
    by_extractor: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_extractor.setdefault(row["extractor"], []).append(row)
        assert row["extractor"] in row["protocol"]
    assert set(by_extractor) == {REAL, STANDIN}
    for group in by_extractor.values():
        assert len({r["protocol"] for r in group}) == 1
        assert sorted(r["rank"] for r in group) == ["1", "2"]
    real = {r["method"]: (r["rank"], r["rfid"]) for r in by_extractor[REAL]}
    assert real == {"GloTok": ("1", "5.000"), "Both": ("2", "7.000")}
    standin = {r["method"]: (r["rank"], r[SFID]) for r in by_extractor[STANDIN]}
    assert standin == {"Baseline": ("1", "1.000"), "Both": ("2", "3.000")}
    # A stand-in number never sits under the bare name, nor a real one under the stand-in's.
    assert all(r["rfid"] == "" for r in by_extractor[STANDIN])
    assert all(r[SFID] == "" for r in by_extractor[REAL])
    # The record measured both ways gives two rows, each with the extractor-free PSNR.
    assert [r["psnr"] for r in rows if r["method"] == "Both"] == ["20.00", "20.00"]
    # The markdown view puts the two protocols in separate tables.
    readme = (tmp_path / "lb" / "README.md").read_text()
    section = readme.split("## Reconstruction")[1].split("\n## ")[0]
    headings = [line for line in section.splitlines() if line.startswith("### measured")]
    assert headings == [f"### measured: glotok-demo-v1#abababababab / val / n=64 / 64px / {extractor}"
                        for extractor in sorted((REAL, STANDIN))]


def test_a_metric_measured_on_other_data_does_not_join_the_row(tmp_path):
    root = tmp_path / "runs"
    metrics = recon_metrics(5.0, extractor=REAL, count=64)
    metrics["psnr"]["protocol"]["count"] = 32  # PSNR on a subset: another protocol
    write_record(root, "r", metrics=metrics)
    regenerate(root, tmp_path / "lb")
    rows = measured(read_csv(tmp_path / "lb" / "reconstruction.csv"))
    assert sorted((r["count"], r["rfid"], r["psnr"]) for r in rows) == [("32", "", "20.00"), ("64", "5.000", "")]


def test_paper_rows_carry_the_published_numbers(tmp_path):
    (tmp_path / "runs").mkdir()
    regenerate(tmp_path / "runs", tmp_path / "lb")

    def paper(name: str, **match: str) -> dict[str, str]:
        rows = [r for r in read_csv(tmp_path / "lb" / f"{name}.csv")
                if all(r[k] == v for k, v in match.items())]
        assert len(rows) == 1, (name, match, rows)
        assert rows[0]["source"] == "paper"
        return rows[0]

    assert (paper("reconstruction", method="GloTok(2x)")["rfid"], paper("reconstruction", method="GloTok(2x)")["psnr"]) == ("0.83", "22.7")
    assert paper("reconstruction", method="GloTok")["rfid"] == "0.92"
    assert paper("reconstruction", method="RQ-VAE")["psnr"] == ""  # printed as '-'
    assert paper("reconstruction", method="IBQ", codebook="262144")["rfid"] == "1.00"
    xar_h = paper("generation", method="GloTok", generator="xAR-H")
    assert (xar_h["gfid"], xar_h["is"], xar_h["params"]) == ("1.75", "327.50", "1.1B")
    assert paper("generation", method="LlamaGen-B")["is"] == "193.61"
    assert paper("generation", method="FQGAN", params="415M")["gfid"] == "3.38"
    glotok = paper("uniformity", method="GloTok")
    assert (glotok["density_cv"], glotok["normalized_entropy"], glotok["gini"]) == ("0.217", "0.9972", "0.1168")
    assert paper("ablation_histogram", lambda_hist="0.1")["psnr"] == "21.97"
    assert paper("ablation_histogram", supervision="none")["rfid"] == "1.43"
    assert paper("ablation_components", supervision="histogram", residual="none")["rfid"] == "0.97"
    assert paper("ablation_components", residual="transformer")["psnr"] == "22.44"
    assert paper("ablation_teachers", teacher="FQGAN")["rfid"] == "0.98"
    assert paper("ablation_teachers", teacher="DINOv2-Kmeans")["psnr"] == "22.39"
    # Every paper row states the protocol it was published under, in a group of its own.
    for row in read_csv(tmp_path / "lb" / "reconstruction.csv"):
        assert row["protocol"] == "imagenet-1k / val / n=50000 / 256px / inception-v3"
        assert (row["dataset"], row["count"], row["resolution"]) == ("imagenet-1k", "50000", "256")
    counts = {name: len(read_csv(tmp_path / "lb" / f"{name}.csv")) for name in
              ("reconstruction", "generation", "uniformity", "ablation_histogram",
               "ablation_components", "ablation_teachers", "training_cost")}
    assert counts == {"reconstruction": 15, "generation": 20, "uniformity": 3, "ablation_histogram": 3,
                      "ablation_components": 3, "ablation_teachers": 3, "training_cost": 0}


def test_every_line_of_the_paper_numbers_has_the_headers_width():
    from importlib import resources

    from glotok_bench.leaderboard.errors import LeaderboardError
    from glotok_bench.leaderboard.paper import PAPER_FILE, parse_paper_numbers

    text = resources.files("glotok_bench.leaderboard").joinpath(PAPER_FILE).read_text(encoding="utf-8")
    lines = list(csv.reader(io.StringIO(text)))
    assert {len(fields) for fields in lines} == {len(lines[0])}
    assert len(parse_paper_numbers(text)) == len(lines) - 1
    # An unquoted comma in a note is refused with its line number, not cut off silently.
    broken = text.rstrip("\n").splitlines()
    broken[5] += ", and more"
    with pytest.raises(LeaderboardError, match="line 6: 28 fields under a 27-field header"):
        parse_paper_numbers("\n".join(broken))


def test_paper_rows_are_ranked_apart_from_measured_rows(built):
    rows = read_csv(built[0] / "ablation_histogram.csv")
    assert [r["source"] for r in rows] == ["paper"] * 3 + ["measured"] * 3
    assert sorted(r["rank"] for r in rows if r["source"] == "paper") == ["1", "2", "3"]
    assert sorted(r["rank"] for r in rows if r["source"] == "measured") == ["1", "2", "3"]


def test_seeds_are_aggregated_to_mean_std_and_n(built):
    rows = measured(read_csv(built[0] / "ablation_histogram.csv"))
    # Sorted along the axis: no histogram (weight 0), then 0.01, then 0.1.
    assert [(r["supervision"], r["lambda_hist"]) for r in rows] == [("none", "0"), ("histogram", "0.01"), ("histogram", "0.1")]
    seeds = rows[1]
    assert (seeds[SFID], seeds[f"{SFID}_std"], seeds["psnr"], seeds["psnr_std"], seeds["n"]) == (
        "11.00", "1.000", "21.00", "1.000", "3")
    # 95% t-interval half-width over 3 seeds: t(0.975, 2) * 1 / sqrt(3) = 4.303 / 1.732.
    assert (seeds[f"{SFID}_ci95"], seeds["psnr_ci95"]) == ("2.484", "2.484")
    assert seeds["run_ids"] == "hist-001-s0 hist-001-s1 hist-001-s2"
    assert seeds["training"] == "300 steps"
    assert (rows[2]["n"], rows[2][f"{SFID}_std"], rows[2][f"{SFID}_ci95"]) == ("1", "", "")  # one run: no spread to report
    assert [r["rank"] for r in rows] == ["3", "1", "2"]


def test_failed_records_give_no_rows_but_are_counted(built):
    out, outcome = built
    assert [p.parent.name for p in outcome.collection.failed] == ["broken-cell"]
    for name in ("reconstruction", "ablation_histogram", "training_cost"):
        assert not any("broken-cell" in r["run_ids"] for r in read_csv(out / f"{name}.csv"))
    assert "1 failed" in (out / "README.md").read_text()


def test_uniformity_and_training_cost_rows(built):
    rows = measured(read_csv(built[0] / "uniformity.csv"))
    by_branch = {r["branch"]: (r["density_cv"], r["density_cv_repeat_std"], r["rank"]) for r in rows}
    # Branches are protocols of their own: each ranks first in its group.
    assert by_branch == {"semantic": ("0.3000", "0.02000", "1"), "visual": ("0.5000", "0.01000", "1")}
    cost = measured(read_csv(built[0] / "training_cost.csv"))
    assert sorted((r["supervision"], r["other_labels"], r["images_per_s"], r["peak_memory_mib"], r["n"]) for r in cost) == [
        ("histogram", "lambda_hist=0.01", "20.00", "512.0", "3"),
        ("histogram", "lambda_hist=0.1", "20.00", "512.0", "1"),
        ("none", "lambda_hist=0", "25.00", "512.0", "1"),
    ]
    assert {r["protocol"] for r in cost} == {"cpu / 64px / batch_size=8"}


def test_an_interrupted_write_leaves_the_old_csv_intact(runs, tmp_path, monkeypatch):
    out = tmp_path / "lb"
    regenerate(runs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_record(runs, "newer", labels={"lambda_hist": 0.5}, metrics=recon_metrics(1.0))
    written = []

    def killed(fd):
        # The new ablation table is fully in its temp file; the process dies before the rename.
        temp = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if temp.name.startswith(".ablation_histogram.csv."):
            written.append(temp.read_text())
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        regenerate(runs, out)
    assert "newer" in written[0]  # the write really was under way with the new rows
    assert (out / "ablation_histogram.csv").read_bytes() == before["ablation_histogram.csv"]
    assert {p.name for p in out.iterdir()} == set(before)  # and no temp file is left behind


def test_a_missing_records_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(leaderboard, ["regenerate", "--records", str(tmp_path / "nope"),
                                              "--out", str(tmp_path / "lb")])
    assert result.exit_code != 0
    assert "records folder" in str(result.exception) and not (tmp_path / "lb").exists()


@pytest.mark.parametrize(("value", "text"), [
    (12.3456, "12.35"), (0.000123456, "0.0001235"), (123456.0, "123500"), (1.0, "1.000"),
    (0.0, "0"), (-2.5, "-2.500"), (float("nan"), ""), (None, ""),
])
def test_numbers_are_printed_with_four_significant_digits(value, text):
    assert format_number(value) == text


def test_grid_axis_labels_and_copied_runs(tmp_path):
    root = tmp_path / "runs"
    # Grid cells are labelled with config paths; they mean the same as the plain names.
    write_record(root, "a", labels={"lambda_hist": None, "loss.semantic_weight": 0.1, "train.seed": 0},
                 metrics=recon_metrics(2.0))
    write_record(root, "b", labels={"lambda_hist": 0.1, "seed": 1}, metrics=recon_metrics(4.0))
    (root / "copy-of-b").mkdir()
    (root / "copy-of-b" / "record.json").write_bytes((root / "b" / "record.json").read_bytes())
    outcome = regenerate(root, tmp_path / "lb")
    assert [p.parent.name for p in outcome.collection.duplicates] == ["copy-of-b"]
    rows = measured(read_csv(tmp_path / "lb" / "ablation_histogram.csv"))
    assert [(r["lambda_hist"], r[SFID], r["n"], r["other_labels"]) for r in rows] == [("0.1", "3.000", "2", "quantizer=dual")]


def test_runs_sharing_a_seed_are_one_sample_not_two_seeds(tmp_path):
    root = tmp_path / "runs"
    # The same cell under two grids (two config ids, one seed) and a second seed.
    write_record(root, "table5-cell", labels={"seed": 0}, metrics=recon_metrics(8.0, psnr=19.0))
    write_record(root, "demo-cell", labels={"seed": 0}, metrics=recon_metrics(8.0, psnr=19.0))
    write_record(root, "seed-1", labels={"seed": 1}, metrics=recon_metrics(10.0, psnr=21.0))
    regenerate(root, tmp_path / "lb")
    [row] = measured(read_csv(tmp_path / "lb" / "ablation_histogram.csv"))
    assert (row["n"], row[SFID], row[f"{SFID}_std"], row["psnr"]) == ("2", "9.000", "1.414", "20.00")
    assert row["run_ids"] == "demo-cell seed-1 table5-cell"  # every run stays traceable


def test_records_from_several_folders_are_merged_and_none_found_is_an_error(tmp_path):
    fresh, archive = tmp_path / "runs", tmp_path / "archive"
    write_record(fresh, "a", labels={"method": "GloTok", "seed": 0}, metrics=recon_metrics(10.0))
    write_record(archive, "b", labels={"method": "GloTok", "seed": 1}, metrics=recon_metrics(12.0))
    outcome = regenerate([fresh, archive, tmp_path / "not-there"], tmp_path / "lb")
    assert outcome.collection.used == 2
    row = measured(read_csv(tmp_path / "lb" / "reconstruction.csv"))[0]
    assert row["n"] == "2"
    from glotok_bench.leaderboard.errors import LeaderboardError

    with pytest.raises(LeaderboardError, match="no records folder found"):
        regenerate([tmp_path / "typo"], tmp_path / "lb2")
