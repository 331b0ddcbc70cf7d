"""nbval support: enforce the book's time budget of 180 s per notebook.

Each notebook must run top to bottom in at most 180 s on two CPU cores. nbval
reports one test per cell; this plugin adds up the cells of each notebook and
fails the session, naming the notebook, when one goes over budget.

The budget is a property of one notebook on an otherwise idle machine, so it
is enforced only in the strict, serial run (``make nbval``: ``--nbval``
without pytest-xdist). ``make claims`` (``--nbval-lax``, two notebooks at a
time) checks asserts, not time, and only reports the times.
"""

from collections import defaultdict

import pytest

NOTEBOOK_BUDGET_S = 180.0
_elapsed: dict[str, float] = defaultdict(float)


def _budget_applies(config) -> bool:
    parallel = getattr(config.option, "numprocesses", None) not in (None, 0)
    return bool(config.getoption("--nbval", default=False)) and not parallel


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _elapsed[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _elapsed:
        return
    terminalreporter.section(
        f"notebook run times (budget {NOTEBOOK_BUDGET_S:.0f} s each)"
    )
    enforced = _budget_applies(terminalreporter.config)
    if not enforced:
        terminalreporter.write_line("(not enforced: not a strict, serial --nbval run)")
    for notebook, seconds in sorted(_elapsed.items()):
        over = enforced and seconds > NOTEBOOK_BUDGET_S
        flag = "  OVER BUDGET" if over else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {notebook}{flag}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if not _budget_applies(session.config):
        return
    over = [nb for nb, s in _elapsed.items() if s > NOTEBOOK_BUDGET_S]
    if over and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            f"\nnotebooks over the {NOTEBOOK_BUDGET_S:.0f} s budget: {', '.join(over)}"
        )
