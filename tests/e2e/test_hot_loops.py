"""The start log says whether the per-line loops run compiled or in Python: an operator who
sees one core busy at a tenth of the expected rate can tell at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service import NotifierProcess, wait_for


@pytest.mark.parametrize(("env", "loops"), [({}, "compiled"), ({"PURE_PYTHON": "1"}, "python")])
def test_the_start_log_says_how_the_hot_loops_run(
    tmp_path: Path, env: dict[str, str], loops: str
) -> None:
    with NotifierProcess(tmp_path, env=env) as proc:
        started = wait_for(
            lambda: [e for e in proc.log_events() if e.get("event") == "notifier started"],
            what="the start line",
        )
    assert started[0]["hot_loops"] == loops
