"""README's findings are the committed reference runs: every table is re-derived here from the run directory
(as `python -m reports.findings` prints it) and must appear in README.md verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports.accuracy import accuracy_rows
from reports.answers import answer_table
from reports.findings import device_answers, passing_table
from reports.fits import arm_fits, fit_table
from reports.rundata import load_run

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


@pytest.mark.parametrize("task", ["synthetic", "rotten_tomatoes"])
def test_the_fit_tables_are_the_paper_fit_reference(readme, task):
    run = load_run(REFERENCE / "paper-fit")
    assert len({f.device for f in arm_fits(run) if f.task == task}) >= 5
    assert fit_table(run, task) in readme


def test_the_accuracy_tables_are_the_paper_accuracy_reference(readme):
    run = load_run(REFERENCE / "paper-accuracy")
    rows = accuracy_rows(run)
    arms = {(r.device, r.method, r.tuning) for r in rows if r.test is not None and r.test.n >= 3}
    for device in ("rpi-3b-plus", "rpi-4-2gb"):  # all four arms measured on both boards, with 3 seeds or more
        assert {(m, t) for d, m, t in arms if d == device} == {
            ("mezo", "full"), ("mezo", "head"), ("bp-checkpointed", "full"), ("bp-checkpointed", "lora")
        }
    assert answer_table(run, rows) in readme
    assert passing_table(device_answers(run, rows)) in readme
