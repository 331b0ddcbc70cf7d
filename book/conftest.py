"""nbval support: enforce the book's time budget of 180 s per notebook.

Each notebook must run top to bottom in at most 180 s on two CPU cores. nbval
reports one test per cell; this plugin adds up the cells of each notebook and
fails the session, naming the notebook, when one goes over budget.
"""

from collections import defaultdict

import pytest

NOTEBOOK_BUDGET_S = 180.0
_elapsed: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _elapsed[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _elapsed:
        return
    terminalreporter.section(
        f"notebook run times (budget {NOTEBOOK_BUDGET_S:.0f} s each)"
    )
    for notebook, seconds in sorted(_elapsed.items()):
        flag = "  OVER BUDGET" if seconds > NOTEBOOK_BUDGET_S else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {notebook}{flag}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    over = [nb for nb, s in _elapsed.items() if s > NOTEBOOK_BUDGET_S]
    if over and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            f"\nnotebooks over the {NOTEBOOK_BUDGET_S:.0f} s budget: {', '.join(over)}"
        )
