"""nbval support: enforce the book's time budget of 180 s per notebook.

Each notebook must run top to bottom in at most 180 s on two CPU cores. nbval
reports one test per cell; this plugin adds up the cells of each notebook and
fails the session, naming the notebook, when one goes over budget.

The budget is a property of one notebook on an otherwise idle machine, so it
is enforced only in the strict, serial run (``make nbval``: ``--nbval``
without pytest-xdist). ``make claims`` (``--nbval-lax``, two notebooks at a
time) checks asserts, not time, and only reports the times.

It also knows whose digits the stored outputs are. A cell that trains a
model (or sums enough matrix products) prints digits that depend on the CPU
vendor, because MKL keeps Intel's AVX2 path on Intel CPUs only (see
``mlcomp.numerics``). Such a cell carries the comment line
``# NBVAL_BOOK_DIGITS``: its output is compared on a CPU like the one that
made the stored outputs (``numerics.report()["book_digits"]``) and not on
any other, where only its asserts and errors count; the run says how many
cells it relaxed and why.
"""

from collections import defaultdict

import pytest

from mlcomp import numerics

NOTEBOOK_BUDGET_S = 180.0
_elapsed: dict[str, float] = defaultdict(float)
BOOK_DIGITS_MARKER = "# NBVAL_BOOK_DIGITS"
_relaxed: list[str] = []


def _has_book_digits_marker(source: str) -> bool:
    return any(
        line.strip().startswith(BOOK_DIGITS_MARKER) for line in source.splitlines()
    )


def pytest_collection_modifyitems(items):
    if numerics.report()["book_digits"]:
        return
    for item in items:
        cell = getattr(item, "cell", None)
        options = getattr(item, "options", None)
        if cell is None or options is None or not options.get("check"):
            continue
        if _has_book_digits_marker(cell.source):
            options["check"] = False
            _relaxed.append(item.nodeid)


def _budget_applies(config) -> bool:
    parallel = getattr(config.option, "numprocesses", None) not in (None, 0)
    return bool(config.getoption("--nbval", default=False)) and not parallel


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _elapsed[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _relaxed:
        ref = numerics.REFERENCE
        terminalreporter.section("cells whose digits are the book's CPU's")
        terminalreporter.write_line(
            f"{len(_relaxed)} cells marked {BOOK_DIGITS_MARKER} ran with their output "
            f"not compared: the stored outputs come from an {ref['cpu_vendor']} CPU "
            f"(MKL branch {ref['mkl_branch']}) and this one computes other last digits "
            "(mlcomp numerics); their asserts ran"
        )
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
