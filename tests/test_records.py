"""What a run record says about the code and environment it ran under."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from glotok_bench.records import new_record

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout the tests run from")
def test_a_record_names_the_commit_of_the_code_that_made_it():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    source = new_record("train", run_id="r")["environment"]["source"]
    assert source["commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip() != ""  # fmt: skip
    assert source["dirty"] is dirty
