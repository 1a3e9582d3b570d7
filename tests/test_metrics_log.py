"""Reading metrics.jsonl while it is written: the tolerant row reader that truncate_log and
the grid's sync thread share, and the tail that reads only what each pass finds appended."""

from __future__ import annotations

import json

import pytest

from glotok_bench.train.metrics_log import LogTail, logged_rows, truncate_log


def _line(step: int, **values) -> str:
    return json.dumps({"step": step, **values}) + "\n"


def _steps(tail: LogTail) -> list[int]:
    return [row["step"] for row in tail.new_rows()]


def test_lines_that_are_not_whole_rows_are_passed_over():
    lines = [_line(1), "", "[1, 2]", '{"loss": 0.5}', '{"step": "2"}', _line(3, loss=0.5), '{"step": 4, "lo']
    assert [(line, row) for line, row in logged_rows(lines)] == [(_line(1), {"step": 1}),
                                                                 (_line(3, loss=0.5), {"step": 3, "loss": 0.5})]


def test_truncate_log_keeps_the_lines_up_to_the_step_as_written(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1,   "loss": 1.0}\n' + _line(2) + "not json\n" + _line(3) + '{"step": 4, "lo')
    truncate_log(log, 2)
    assert log.read_text() == '{"step": 1,   "loss": 1.0}\n' + _line(2)


def test_appended_lines_arrive_once(tmp_path):
    log = tmp_path / "metrics.jsonl"
    tail = LogTail(log)
    assert _steps(tail) == []  # not written yet
    log.write_text(_line(1) + _line(2))
    assert _steps(tail) == [1, 2]
    assert _steps(tail) == []
    with open(log, "a") as handle:
        handle.write(_line(3))
    assert _steps(tail) == [3]


def test_a_line_being_written_waits_until_it_is_whole(tmp_path):
    log = tmp_path / "metrics.jsonl"
    whole = '{"step": 2, "note": "naïve"}\n'.encode()  # torn inside its two-byte character below
    torn_at = whole.index("ï".encode()) + 1
    log.write_bytes(_line(1).encode() + whole[:torn_at])
    tail = LogTail(log)
    assert _steps(tail) == [1]
    assert _steps(tail) == []
    with open(log, "ab") as handle:
        handle.write(whole[torn_at:])
    assert [row for row in tail.new_rows()] == [{"step": 2, "note": "naïve"}]


@pytest.mark.parametrize("how", ["truncate_log", "in place"])
def test_a_log_cut_back_is_read_again_from_its_start(tmp_path, how):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(_line(step, loss=1.0) for step in (1, 2, 3, 4)))
    tail = LogTail(log)
    assert _steps(tail) == [1, 2, 3, 4]
    if how == "truncate_log":
        # A resume from the step-2 checkpoint replaces the file; the new one may have grown
        # past the old one's length before the next read.
        truncate_log(log, 2)
        resumed = (3, 4, 5)
    else:  # the same file, shorter
        log.write_text(_line(1, loss=1.0) + _line(2, loss=1.0))
        resumed = (3,)
    with open(log, "a") as handle:
        handle.write("".join(_line(step, loss=2.0) for step in resumed))
    assert [(row["step"], row["loss"]) for row in tail.new_rows()] == [
        (1, 1.0), (2, 1.0), *((step, 2.0) for step in resumed)]


def test_a_row_whose_handling_failed_comes_again(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(_line(1) + "torn\n" + _line(2) + _line(3))
    tail = LogTail(log)
    taken = []
    with pytest.raises(RuntimeError):
        for row in tail.new_rows():
            if row["step"] == 2:
                raise RuntimeError("report failed")
            taken.append(row["step"])
    assert taken == [1]
    assert _steps(tail) == [2, 3]
