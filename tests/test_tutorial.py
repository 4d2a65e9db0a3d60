"""The tutorial (docs/tutorial/tutorial.py, jupytext percent format) runs as it is written, so it cannot rot."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial" / "tutorial.py"


@pytest.mark.usefixtures("one_thread")
def test_the_tutorial_measures_sweeps_reports_and_reads_a_verdict(capsys):
    namespace = runpy.run_path(str(TUTORIAL), run_name="tutorial")
    out = capsys.readouterr().out
    assert namespace["one"].height == 2 and namespace["one"]["r2_lin"].is_finite().all()
    assert "7 measured, 0 cached, 0 failed" in out and "0 measured, 7 cached, 0 failed" in out
    verdicts = namespace["verdicts"]
    assert verdicts["block"].to_list() == [0, 1]
    assert set(verdicts["verdict"]) <= {"learned-above", "learned-below", "within-band", "undetermined"}
    figures = namespace["work"] / "figures"
    assert (figures / "report.md").stat().st_size > 0 and (figures / "small_multiples.png").exists()
