"""A finished run is never damaged: run-folder locks, records kept on failed or no-op
reruns, and clear one-line errors (not tracebacks) when results cannot be written."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest

from glotok_bench.atomic import atomic_write_text, remove_orphaned_temp_files
from glotok_bench.errors import ConfigError, OutputError
from glotok_bench.processes import this_host
from glotok_bench.records import HISTORY_DIR, RECORD_NAME, read_record, record_job
from glotok_bench.runlock import (
    LOCK_NAME,
    Lease,
    LocalLeaseStore,
    RunLock,
    RunLockedError,
    hold_run_folder,
)

REPO = Path(__file__).resolve().parents[1]


@attrs.frozen
class Settings:
    lr: float = 1e-3
    seed: int = 0


@attrs.frozen
class Nested:
    train: Settings = Settings()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _lease(**changes) -> Lease:
    base = Lease(token="t0", host=this_host(), pid=os.getpid(), started="2026-01-01T00:00:00+00:00",
                 expires=time.time() + 3600, job="train")
    return attrs.evolve(base, **changes)


# -- the lock ---------------------------------------------------------------------------


def test_a_second_job_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    with hold_run_folder(tmp_path, job="train"):
        with pytest.raises(RunLockedError) as refused:
            RunLock(LocalLeaseStore(tmp_path), job="eval").acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and this_host() in message and "train job" in message
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit
    with hold_run_folder(tmp_path, job="eval"):  # and free again
        pass


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    store = LocalLeaseStore(tmp_path)
    assert store.create(_lease(pid=_dead_pid()))
    with pytest.warns(UserWarning, match="no longer exists"):
        with hold_run_folder(tmp_path, job="train") as lock:
            assert store.read().token == lock.lease.token


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    LocalLeaseStore(tmp_path).create(_lease(pid=os.getpid(), pid_start="1"))  # our pid, another process
    with pytest.warns(UserWarning, match="pid reused"):
        with hold_run_folder(tmp_path):
            pass


def test_a_lock_from_another_host_is_taken_over_only_after_its_lease_expires(tmp_path):
    store = LocalLeaseStore(tmp_path)
    store.create(_lease(host="elsewhere", pid=1, expires=time.time() + 3600))
    with pytest.raises(RunLockedError, match="host elsewhere"):
        RunLock(store).acquire()
    store.swap(store.read(), _lease(token="t1", host="elsewhere", pid=1, expires=time.time() - 1))
    with pytest.warns(UserWarning, match="expired"):
        with hold_run_folder(tmp_path):
            pass


def test_swap_only_replaces_the_lease_that_was_read(tmp_path):
    store = LocalLeaseStore(tmp_path)
    first = _lease(token="a")
    assert store.create(first) and not store.create(_lease(token="b"))
    assert store.swap(first, _lease(token="c"))
    assert not store.swap(first, _lease(token="d"))  # "a" is gone: a second taker loses
    assert store.read().token == "c"


def test_a_held_lease_is_renewed_while_the_job_runs(tmp_path):
    store = LocalLeaseStore(tmp_path)
    lock = RunLock(store, lease_s=0.3)
    first = lock.acquire().expires
    try:
        deadline = time.time() + 60
        while store.read().expires <= first and time.time() < deadline:
            time.sleep(0.05)
        assert store.read().expires > first
        assert store.read().token == lock.lease.token
    finally:
        lock.release()


_RACER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import attrs
    from glotok_bench.errors import GlotokError
    from glotok_bench.records import record_job

    @attrs.frozen
    class Settings:
        lr: float = 1e-3

    folder, go, release = map(Path, sys.argv[1:4])
    while not go.exists():
        time.sleep(0.01)

    def job():
        deadline = time.time() + 300
        while not release.exists() and time.time() < deadline:
            time.sleep(0.05)
        return {"results": {"pid": __import__("os").getpid()}}

    try:
        record_job("train", folder, Settings(), job)
    except GlotokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
''')


def test_two_processes_racing_for_one_folder_exactly_one_wins(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    folder, go, release = tmp_path / "run", tmp_path / "go", tmp_path / "release"
    racers = [
        subprocess.Popen([sys.executable, str(script), str(folder), str(go), str(release)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for _ in range(2)
    ]
    go.touch()
    try:
        deadline = time.time() + 300
        while all(r.poll() is None for r in racers) and time.time() < deadline:
            time.sleep(0.05)
        losers = [r for r in racers if r.poll() is not None]
        assert len(losers) == 1, "neither racer was refused"
        loser = losers[0]
        winner = next(r for r in racers if r is not loser)
    finally:
        release.touch()
    _, loser_err = loser.communicate(timeout=300)
    winner.communicate(timeout=300)
    assert loser.returncode == 2 and winner.returncode == 0
    assert f"pid {winner.pid}" in loser_err and "is in use by" in loser_err
    record = read_record(folder / RECORD_NAME)
    assert record["status"] == "ok" and record["results"]["train"]["pid"] == winner.pid
    assert not (folder / HISTORY_DIR).exists()  # the loser never touched the record


# -- records ----------------------------------------------------------------------------


def _finished(run_dir: Path) -> dict:
    return record_job("train", run_dir, Settings(), lambda: {"results": {"final_step": 40}})


def test_a_failed_rerun_keeps_the_finished_record_and_files_the_failure_beside_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = _finished(run_dir)
    config_before = (run_dir / "config.toml").read_text()

    def broken():
        raise ConfigError("data typo")

    with pytest.raises(ConfigError):
        record_job("train", run_dir, Settings(lr=0.5), broken)
    assert read_record(run_dir / RECORD_NAME) == first
    assert (run_dir / "config.toml").read_text() == config_before
    (failed,) = (run_dir / HISTORY_DIR).iterdir()
    assert json.loads(failed.read_text())["error"]["message"] == "data typo"
    assert "kept the finished record" in capsys.readouterr().err


def test_a_no_op_rerun_keeps_the_finished_record(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = _finished(run_dir)
    kept = record_job("train", run_dir, Settings(), lambda: {"results": {"final_step": 40, "losses": {}},
                                                            "no_op": True}, resumes=True)
    assert kept == first == read_record(run_dir / RECORD_NAME)
    assert "nothing to do" in capsys.readouterr().err


def test_a_successful_rerun_replaces_the_record_and_keeps_the_old_one_in_history(tmp_path):
    run_dir = tmp_path / "run"
    first = _finished(run_dir)
    second = record_job("eval", run_dir, Settings(lr=0.5), lambda: {"results": {"n": 2}})
    assert read_record(run_dir / RECORD_NAME) == second
    assert "lr = 0.5" in (run_dir / "config.toml").read_text()
    (old,) = (run_dir / HISTORY_DIR).iterdir()
    assert json.loads(old.read_text()) == first


def test_a_resume_with_changed_settings_is_refused_before_the_job_runs(tmp_path):
    run_dir = tmp_path / "run"
    record_job("train", run_dir, Nested(), lambda: {"results": {}})
    config_before = (run_dir / "config.toml").read_text()
    ran = []
    with pytest.raises(ConfigError, match=r"train.lr: 0.001 -> 0.5; train.seed: 0 -> 7"):
        record_job("train", run_dir, Nested(Settings(lr=0.5, seed=7)), lambda: ran.append(1), resumes=True)
    assert not ran and (run_dir / "config.toml").read_text() == config_before


def test_an_unfinished_run_gets_its_config_and_a_running_record_first(tmp_path):
    run_dir = tmp_path / "run"

    def job():
        assert read_record(run_dir / RECORD_NAME)["status"] == "running"
        assert (run_dir / "config.toml").is_file()
        return {"results": {}}

    assert record_job("train", run_dir, Settings(), job)["status"] == "ok"


# -- writes that cannot happen ----------------------------------------------------------


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    atomic_write_text(target, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.fixture()
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root and mount); skipped where the platform refuses."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the simulated ENOSPC test covers the logic")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_torch_save_on_a_full_filesystem_names_the_file(tiny_filesystem):
    import torch

    from glotok_bench.atomic import atomic_torch_save

    target = tiny_filesystem / "ckpt-00000040.pt"
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        atomic_torch_save(target, torch.zeros(100_000))
    assert list(tiny_filesystem.iterdir()) == []


def test_a_read_only_run_folder_is_one_clear_error(tiny_filesystem):
    run_dir = tiny_filesystem / "run"
    run_dir.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_filesystem)], check=True)
    ran = []
    with pytest.raises(OutputError, match=r"cannot write .*run/\.glotok-lock\.json: Read-only file system"):
        record_job("train", run_dir, Settings(), lambda: ran.append(1))
    assert not ran


def test_temp_files_of_dead_writers_are_removed_at_the_next_write(tmp_path):
    dead = tmp_path / f".ckpt-00000040.pt.abcd1234.{_dead_pid()}@{this_host()}.tmp"
    live = tmp_path / f".ckpt-00000050.pt.efgh5678.{os.getpid()}@{this_host()}.tmp"
    old_unowned = tmp_path / ".ckpt-00000030.pt.ijkl9012.tmp"
    foreign = tmp_path / ".metrics.jsonl.mnop3456.77@elsewhere.tmp"
    someone_elses = tmp_path / ".notes.tmp"
    for path in (dead, live, old_unowned, foreign, someone_elses):
        path.write_bytes(b"")
    os.utime(old_unowned, (time.time() - 7200, time.time() - 7200))
    removed = remove_orphaned_temp_files(tmp_path, force=True)
    assert sorted(removed) == sorted([dead, old_unowned])
    assert live.exists() and foreign.exists() and someone_elses.exists()


def test_a_staged_folder_leaves_nothing_when_the_job_fails_and_everything_when_it_succeeds(tmp_path):
    from glotok_bench.atomic import staged_folder

    out = tmp_path / "samples"
    out.mkdir()
    (out / "samples.npz").write_bytes(b"finished run")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as staging:
            (staging / "samples.npz").write_bytes(b"new samples")
            (staging / "grid.png").write_bytes(b"png")
            raise RuntimeError("gFID failed after sampling")
    assert sorted(p.name for p in out.iterdir()) == ["samples.npz"]
    assert (out / "samples.npz").read_bytes() == b"finished run"
    with staged_folder(out) as staging:
        (staging / "samples.npz").write_bytes(b"new samples")
    assert sorted(p.name for p in out.iterdir()) == ["samples.npz"]
    assert (out / "samples.npz").read_bytes() == b"new samples"


# -- clear errors instead of tracebacks ----------------------------------------------------


class _Clash:
    """A third-party plugin that registers a built-in's name."""

    from glotok_bench.hookspecs import hookimpl

    @hookimpl
    def glotok_quantizers(self):
        from glotok_bench.registry import Component

        return [Component("dual", "glotok_bench.tokenizer.quantizers:DualQuantizer", "a copy")]


def _run_cli(args, capsys):
    from glotok_bench.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr()


def test_a_plugin_reusing_a_builtin_name_is_reported_and_only_diagnostics_run(capsys):
    from glotok_bench.registry import build_registry, using_registry

    with using_registry(build_registry({"clash": _Clash()})) as registry:
        code, out = _run_cli(["plugins", "list"], capsys)
        assert code == 0
        assert "quantizer 'dual' is registered by plugin" in out.err and "'clash'" in out.err
        assert "vq " in out.out  # the rest is listed
        code, out = _run_cli(["config", "show", str(REPO / "tests" / "configs" / "tiny-glotok.toml")], capsys)
        assert code == 2 and "plugin name conflict: quantizer 'dual'" in out.err
        with pytest.raises(Exception, match="registered by plugin"):
            registry.get("quantizer", "dual")
        assert registry.get("quantizer", "vq").plugin != "clash"


def test_a_checkpoint_whose_weights_differ_from_its_recorded_architecture_is_one_error(tmp_path):
    import torch

    from glotok_bench.checkpoint_format import read_envelope
    from glotok_bench.errors import CheckpointError

    path = tmp_path / "ckpt.pt"
    payload = {"format": "t", "version": 1, "architecture": {"conv.weight": [4, 3]},
               "model": {"conv.weight": torch.zeros(4, 3)}, "ema": {"conv.weight": torch.zeros(5, 3)}}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"'ema' weights do not match its recorded architecture.*"
                                              r"conv.weight: checkpoint \[5, 3\] vs model \[4, 3\]"):
        read_envelope(path, kind="tokenizer", format_tag="t", version=1, required=("model",))
    payload["ema"] = None
    torch.save(payload, path)
    assert read_envelope(path, kind="tokenizer", format_tag="t", version=1, required=("model",))


def test_random_bytes_are_called_corrupt_and_pickled_code_is_called_code(tmp_path):
    import torch

    from glotok_bench.errors import CheckpointError
    from glotok_bench.safe_load import torch_load_weights_only

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02\x2b" + bytes(range(256)) * 4)  # a pickle header, then an invalid opcode
    with pytest.raises(CheckpointError) as corrupt:
        torch_load_weights_only(garbage)
    assert "corrupt" in str(corrupt.value) and "run code" not in str(corrupt.value)

    code = tmp_path / "code.pt"
    torch.save({"args": _Clash()}, code)  # a pickled class instance: unpickling it runs code
    with pytest.raises(CheckpointError, match="can run code"):
        torch_load_weights_only(code)


def test_evaluating_a_folder_where_no_image_is_readable_is_one_error():
    import torch

    from glotok_bench.errors import DataError
    from glotok_bench.eval.evaluator import evaluate_tokenizer

    batches = [{"images": torch.empty(0), "skipped": [f"val/a/{i}.png: cannot identify image file"]}
               for i in range(2)]
    with pytest.raises(DataError, match=r"no readable image to evaluate \(2 unreadable\): val/a/0.png"):
        evaluate_tokenizer(torch.nn.Identity(), batches, {}, device="cpu", progress=False)


def test_16_bit_grayscale_images_are_scaled_not_saturated(tmp_path):
    import numpy as np
    from PIL import Image

    from glotok_bench.data.preprocess import center_crop_resize

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")
        rgb = np.asarray(center_crop_resize(image, 32)).astype(float)
    assert abs(rgb.mean() - 127.5) < 2 and rgb.min() == 0 and rgb.max() == 255


def test_regenerating_from_an_empty_records_folder_refuses_to_wipe_measured_rows(tmp_path, capsys):
    out = tmp_path / "leaderboards"
    out.mkdir()
    table = "source,protocol,method,rfid\nmeasured,demo,GloTok,3.1\npaper,imagenet,GloTok,0.97\n"
    (out / "reconstruction.csv").write_text(table)
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    code, output = _run_cli(["leaderboard", "regenerate", "--records", str(empty), "--out", str(out)], capsys)
    assert code == 2 and "refusing to rewrite" in output.err and "1 measured rows" in output.err
    assert (out / "reconstruction.csv").read_text() == table


@pytest.mark.slow
def test_reruns_of_a_finished_tiny_run_never_damage_it(tmp_path, demo_root, capsys):
    """The issue's scenarios on tests/configs/tiny-glotok.toml, through the CLI."""
    config = tmp_path / "tiny.toml"
    config.write_text(f'extends = "{REPO / "tests" / "configs" / "tiny-glotok.toml"}"\n'
                      f'cache_dir = "{tmp_path / "cache"}"\n'
                      f'[data.dataset]\ncache_dir = "{demo_root}"\n'
                      "[train]\nbatch_size = 2\nmax_steps = 2\ncheckpoint_every = 2\nprogress = false\n")
    run = tmp_path / "R"
    train = ["train", str(config), "--run-dir", str(run)]
    assert _run_cli(train, capsys)[0] == 0
    finished = read_record(run / RECORD_NAME)
    checkpoint = finished["results"]["train"]["checkpoint"]
    settings = (run / "config.toml").read_text()

    code, out = _run_cli(train, capsys)  # nothing left to train
    assert code == 0 and "nothing to do" in out.err and f"trained to step 2: {checkpoint}" in out.out
    code, out = _run_cli([*train, "--no-resume"], capsys)
    assert code == 2 and "already holds a run" in out.err and "kept the finished record" in out.err
    code, out = _run_cli([*train, "--set", "train.lr=0.5", "--set", "train.seed=7"], capsys)
    assert code == 2 and "train.lr: 0.001 -> 0.5; train.seed: 0 -> 7" in out.err

    assert read_record(run / RECORD_NAME) == finished
    assert (run / "config.toml").read_text() == settings
    assert Path(checkpoint).is_file()


def test_a_lock_kept_beside_a_folder_survives_the_folder_being_replaced(tmp_path):
    tokens = tmp_path / "tokens"
    with hold_run_folder(tokens, job="tokenize", beside=True) as lock:
        tokens.mkdir()
        (tmp_path / ".tokens.partial").mkdir()
        tokens.rmdir()
        (tmp_path / ".tokens.partial").rename(tokens)  # as tokenize swaps a complete set in
        with pytest.raises(RunLockedError, match="tokenize job"):
            RunLock(LocalLeaseStore(tokens, beside=True)).acquire()
    assert not lock.lost and not (tmp_path / f".tokens{LOCK_NAME}").exists()


def test_a_folder_the_job_may_not_write_is_one_error_before_the_job_runs(tmp_path, monkeypatch):
    def refused(self, lease):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.path))

    monkeypatch.setattr(LocalLeaseStore, "_write_temp", refused)  # as a chmod 555 folder does for non-root
    ran = []
    with pytest.raises(OutputError, match=r"cannot write .*\.glotok-lock\.json: Permission denied"):
        record_job("eval", tmp_path / "run", Settings(), lambda: ran.append(1))
    assert not ran


def test_where_hard_links_fail_the_lease_is_created_exclusively(tmp_path, monkeypatch):
    def no_links(*_):
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalLeaseStore(tmp_path)
    assert store.create(_lease(token="a")) and not store.create(_lease(token="b"))
    assert store.read().token == "a"


def test_a_tokenizer_config_that_cannot_build_fails_before_the_data_and_teacher(tmp_path, monkeypatch):
    import glotok_bench.pipeline as pipeline
    from glotok_bench.cli.options import load_run_config

    built = []
    monkeypatch.setattr(pipeline, "build_dataset", lambda *args, **kwargs: built.append("dataset"))
    monkeypatch.setattr(pipeline, "build_supervision", lambda *args, **kwargs: built.append("teacher"))
    repo = Path(__file__).resolve().parents[1]
    # The CPU preset at 32 px gives a 4x4 token grid; a transformer adapter learned for 16x16 cannot fit.
    config = load_run_config(repo / "configs" / "cpu" / "glotok.toml", (
        'tokenizer.quantizer.adapter.kind="transformer"', "tokenizer.quantizer.adapter.grid_size=16",
        'tokenizer.autoencoder.encoder_output="trunk"',
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=r"adapter.grid_size = 16, but tokenizer.resolution = 32"):
        pipeline.train_tokenizer(config, tmp_path / "run")
    assert built == [] and not (tmp_path / "run").exists()
