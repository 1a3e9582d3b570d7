"""claims.csv (a verdict per paper claim from seeds) and the grid's ``seeds`` key."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import attrs
import pytest
from test_leaderboard import SFID, recon_metrics, write_record

from glotok_bench.errors import ConfigError
from glotok_bench.grid.spec import expand, load_grid
from glotok_bench.leaderboard.build import regenerate
from glotok_bench.leaderboard.claims import MIN_SEEDS

HIST = {"supervision": "histogram", "lambda_hist": 0.01, "residual": "none", "teacher": "patch-kmeans"}
NONE = {"supervision": "none", "lambda_hist": 0.0, "residual": "none", "teacher": "-"}


def _arms(root: Path, hist: list[float], none: list[float], *, prefix: str = "") -> None:
    for seed, rfid in enumerate(hist):
        write_record(root, f"{prefix}h{seed}", labels={**HIST, "seed": seed}, metrics=recon_metrics(rfid))
    for seed, rfid in enumerate(none):
        write_record(root, f"{prefix}n{seed}", labels={**NONE, "seed": seed}, metrics=recon_metrics(rfid))


def _claim(out: Path, claim: str, metric: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "claims.csv").read_text(encoding="utf-8"))))
    return [r for r in rows if r["claim"] == claim and r["metric"] == metric]


TABLE4 = "histogram relation loss improves reconstruction"


def test_verdicts_follow_the_interval_and_need_five_seeds(tmp_path):
    from scipy import stats

    hist, none = [7.0, 7.2, 7.1, 6.9, 7.3], [8.0, 8.3, 8.1, 7.9, 8.2]
    _arms(tmp_path / "better", hist, none)
    regenerate(tmp_path / "better", tmp_path / "lb1")
    [row] = _claim(tmp_path / "lb1", TABLE4, SFID)
    expected = stats.ttest_ind(hist, none, equal_var=False).confidence_interval(0.95)
    assert (row["n_a"], row["n_b"], row["better"], row["verdict"]) == ("5", "5", "lower", "supports")
    assert float(row["diff"]) == pytest.approx(-1.0, abs=1e-3)
    assert float(row["ci_low"]) == pytest.approx(expected.low, rel=1e-3)
    assert float(row["ci_high"]) == pytest.approx(expected.high, rel=1e-3)
    assert row["run_ids_a"] == "h0 h1 h2 h3 h4" and "teacher=patch-kmeans" in row["arm_a"]

    _arms(tmp_path / "worse", none, hist)  # the histogram arm is now the worse one
    regenerate(tmp_path / "worse", tmp_path / "lb2")
    assert _claim(tmp_path / "lb2", TABLE4, SFID)[0]["verdict"] == "contradicts"

    # Overlapping arms: the interval holds 0.
    _arms(tmp_path / "noise", [7.0, 8.0, 7.5, 7.2, 7.9], [7.4, 7.6, 7.1, 8.1, 7.7])
    regenerate(tmp_path / "noise", tmp_path / "lb3")
    assert _claim(tmp_path / "lb3", TABLE4, SFID)[0]["verdict"] == "undecided"

    # The same clear gap from fewer seeds than MIN_SEEDS is not called.
    _arms(tmp_path / "few", hist[: MIN_SEEDS - 2], none[: MIN_SEEDS - 2])
    regenerate(tmp_path / "few", tmp_path / "lb4")
    [row] = _claim(tmp_path / "lb4", TABLE4, SFID)
    assert row["verdict"] == "undecided" and f"fewer than {MIN_SEEDS} seeds" in row["method"]
    assert row["ci_low"] and row["ci_high"]  # the interval is still reported


def test_a_second_run_of_a_seed_does_not_count_as_another_seed(tmp_path):
    hist, none = [7.0, 7.2, 7.1, 6.9], [8.0, 8.3, 8.1, 7.9, 8.2]
    _arms(tmp_path / "runs", hist, none)
    # Seed 0 of the histogram arm again, under another run id (e.g. the demo grid's copy).
    write_record(tmp_path / "runs", "again-h0", labels={**HIST, "seed": 0}, metrics=recon_metrics(hist[0]))
    regenerate(tmp_path / "runs", tmp_path / "lb")
    [row] = _claim(tmp_path / "lb", TABLE4, SFID)
    assert (row["n_a"], row["verdict"]) == ("4", "undecided") and "fewer than" in row["method"]
    assert row["run_ids_a"] == "again-h0 h0 h1 h2 h3"
    assert float(row["mean_a"]) == pytest.approx(sum(hist) / 4, abs=1e-3)


def test_arms_pair_only_under_one_protocol_and_claims_without_runs_still_get_a_row(tmp_path):
    root = tmp_path / "runs"
    _arms(root, [7.0] * 5, [8.0] * 5)
    # Another dataset size: its runs must not join the 168-image arms.
    for seed in range(5):
        write_record(root, f"other{seed}", labels={**NONE, "seed": seed}, metrics=recon_metrics(1.0, count=32))
    regenerate(root, tmp_path / "lb")
    rows = _claim(tmp_path / "lb", TABLE4, SFID)
    assert [(r["n_a"], r["n_b"], r["mean_b"]) for r in rows] == [("5", "5", "8.000")]
    uniformity = _claim(tmp_path / "lb", "histogram supervision makes the semantic latents more uniform than none",
                        "density_cv")
    assert [(r["n_a"], r["verdict"]) for r in uniformity] == [("0", "undecided")]


def test_claims_regenerate_byte_identically(tmp_path):
    _arms(tmp_path / "runs", [7.0, 7.2, 7.1, 6.9, 7.3], [8.0, 8.3, 8.1, 7.9, 8.2])
    regenerate(tmp_path / "runs", tmp_path / "a")
    regenerate(tmp_path / "runs", tmp_path / "b")
    assert (tmp_path / "a" / "claims.csv").read_bytes() == (tmp_path / "b" / "claims.csv").read_bytes()
    assert "## Claims of the paper" in (tmp_path / "a" / "README.md").read_text(encoding="utf-8")


# -- seeds in a grid ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Train:
    seed: int = 0
    lr: float = 0.1


@attrs.frozen(kw_only=True)
class _Run:
    name: str = "tiny"
    train: _Train = attrs.Factory(_Train)


def _grid(tmp_path: Path, body: str) -> Path:
    (tmp_path / "base.toml").write_text('name = "tiny"\n')
    path = tmp_path / "grid.toml"
    path.write_text(f'name = "g"\nbase = "base.toml"\n{body}\n')
    return path


def test_seeds_run_every_variant_n_times(tmp_path):
    cells = expand(load_grid(_grid(tmp_path, 'seeds = 3\n[axes]\n"train.lr" = [0.1, 0.2]')), _Run, tmp_path)
    assert [(c.config["train"]["lr"], c.config["train"]["seed"]) for c in cells] == [
        (lr, seed) for lr in (0.1, 0.2) for seed in range(3)
    ]
    assert len({c.cell_id for c in cells}) == 6
    listed = expand(load_grid(_grid(tmp_path, "seeds = [4, 9]")), _Run, tmp_path)
    assert [c.config["train"]["seed"] for c in listed] == [4, 9]


@pytest.mark.parametrize("body", ['seeds = 2\n[axes]\n"train.seed" = [0, 1]', "seeds = 0", 'seeds = "5"', "seeds = [1, 1]"])
def test_bad_seeds_are_refused(tmp_path, body):
    with pytest.raises(ConfigError, match="seeds"):
        load_grid(_grid(tmp_path, body))


def test_evidence_grids_run_five_seeds_per_arm_with_uniformity_on():
    from glotok_bench.runconfig import RunConfig

    root = Path(__file__).resolve().parents[1]
    grids = sorted((root / "grids" / "cpu" / "evidence").glob("*.toml"))
    assert len(grids) == 4
    for grid in grids:
        cells = expand(load_grid(grid), RunConfig, root / "runs")
        variants: dict[str, list[int]] = {}
        for cell in cells:
            seed = cell.config["train"]["seed"]
            rest = {**cell.config, "train": {k: v for k, v in cell.config["train"].items() if k != "seed"}}
            variants.setdefault(repr(sorted(rest.items())), []).append(seed)
            assert cell.config["eval"]["uniformity"], f"{grid.name}: uniformity is off"
            teacher_file = cell.config["supervision"].get("teacher_file")
            assert not teacher_file or (root / teacher_file).is_file()
        assert all(sorted(seeds) == list(range(MIN_SEEDS)) for seeds in variants.values()), grid.name


def _ab_csv(folder: Path, hist: list[float], local: list[float], kind: str = "result") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = "run_id,run_kind,repeat,supervision,semantic_size,device,threads,teacher_model,teacher_image_size,head_width,step_ms,peak_memory_mb"
    lines = [header]
    for repeat, (h, loc) in enumerate(zip(hist, local, strict=True)):
        for arm, ms in (("histogram", h), ("local-infonce", loc)):
            lines.append(f"r1,\"{kind}\",{repeat},{arm},4096,cpu,1,vit_small_patch14_dinov2,28,128,{ms},{1000 if arm == 'histogram' else 1100}")
    (folder / "supervision_ab.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_b2_cost_claim_is_paired_over_interleaved_benchmark_repeats(tmp_path):
    from scipy import stats

    # Load drifts between repeats, but each repeat's local step is ~20% slower than its histogram one.
    hist = [100.0, 150, 90, 200, 120, 110, 170, 95, 130, 160]
    local = [x * 1.2 + (i % 3) for i, x in enumerate(hist)]
    _arms(tmp_path / "runs", [7.0], [8.0])
    regenerate(tmp_path / "runs", tmp_path / "lb", benchmarks=_ab_csv(tmp_path / "bench", hist, local))
    claim = "histogram supervision trains faster and lighter than local supervision"
    [step] = _claim(tmp_path / "lb", claim, "step_ms")
    expected = stats.ttest_rel(hist, local).confidence_interval(0.95)
    assert (step["n_a"], step["verdict"], step["run_ids_a"]) == ("10", "supports", "r1")
    assert float(step["ci_low"]) == pytest.approx(expected.low, rel=1e-3)
    assert "paired" in step["method"]
    assert _claim(tmp_path / "lb", claim, "peak_memory_mb")[0]["verdict"] == "supports"

    _ab_csv(tmp_path / "quick", hist[:2], local[:2], kind="quick check (2 repeats, not a result)")
    regenerate(tmp_path / "runs", tmp_path / "lb2", benchmarks=tmp_path / "quick")
    [quick] = _claim(tmp_path / "lb2", claim, "step_ms")
    assert quick["verdict"] == "undecided" and "quick check" in quick["method"]


def test_the_random_codebook_control_is_only_table_6s_arm(tmp_path):
    root = tmp_path / "runs"
    _arms(root, [7.0] * 5, [8.0] * 5)
    for seed in range(5):
        write_record(root, f"rand{seed}", labels={**HIST, "teacher": "file:random-codebook-256x48.safetensors",
                                                  "seed": seed}, metrics=recon_metrics(9.0))
    regenerate(root, tmp_path / "lb")
    table4 = _claim(tmp_path / "lb", TABLE4, SFID)
    assert [(r["run_ids_a"], r["mean_a"]) for r in table4] == [("h0 h1 h2 h3 h4", "7.000")]
    [table6] = _claim(tmp_path / "lb", "a semantic teacher beats a random codebook", SFID)
    assert (table6["run_ids_b"], table6["mean_a"], table6["mean_b"], table6["verdict"]) == (
        "rand0 rand1 rand2 rand3 rand4", "7.000", "9.000", "supports")


def test_runs_with_different_teachers_are_not_paired_across_a_lambda_sweep(tmp_path):
    root = tmp_path / "runs"
    for seed in range(5):
        write_record(root, f"a{seed}", labels={**HIST, "seed": seed}, metrics=recon_metrics(7.0))
        write_record(root, f"other{seed}", labels={**HIST, "teacher": "dinov2-kmeans", "seed": seed},
                     metrics=recon_metrics(6.0))
        write_record(root, f"b{seed}", labels={**HIST, "lambda_hist": 0.1, "seed": seed}, metrics=recon_metrics(8.0))
    regenerate(root, tmp_path / "lb")
    rows = _claim(tmp_path / "lb", "lambda_hist 0.01 beats 0.1", SFID)
    assert [(r["run_ids_a"], r["run_ids_b"]) for r in rows] == [("a0 a1 a2 a3 a4", "b0 b1 b2 b3 b4")]


def test_step_time_from_training_records_never_decides_but_memory_does(tmp_path):
    """Grid runs are timed under whatever load the machine had; only interleaved A/B decides."""
    root = tmp_path / "runs"
    for seed in range(MIN_SEEDS):
        for arm, speed, memory in (("histogram", 30.0, 900), ("local-infonce", 10.0, 1200)):
            labels = {"supervision": arm, "seed": seed, "teacher": "patch-kmeans" if arm == "histogram" else "-",
                      "lambda_hist": 0.01 if arm == "histogram" else 0.0}
            train = {"steps": 500, "images_per_s": speed + seed * 0.1, "step_time_s": 16 / speed,
                     "peak_memory_bytes": (memory + seed) * 2**20, "wall_time_s": 60.0, "device": "cpu"}
            write_record(root, f"{arm}-{seed}", labels=labels, train=train)
    regenerate(root, tmp_path / "lb")
    claim = "histogram supervision trains faster and lighter than local supervision"
    [speed] = _claim(tmp_path / "lb", claim, "images_per_s")
    assert speed["verdict"] == "undecided" and "not interleaved" in speed["method"]
    assert speed["ci_low"] and float(speed["ci_low"]) > 0  # the interval is still shown
    [memory] = _claim(tmp_path / "lb", claim, "peak_memory_mib")
    assert memory["verdict"] == "supports"
