"""Benchmarks: `make bench` (or `python -m bench [name ...]`).

Each module `bench/bench_<name>.py` defines `run() -> list[Result]`. Every result compares the
library with a reference measured in the same run and is printed as a ratio, with the goal the
book sets and whether it was met. Benchmarks time things; tests never do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    """One line of the benchmark report.

    ``ratio`` is ours/reference in the unit of the measure; ``goal`` is a bound on it and
    ``higher_is_better`` says in which direction the goal points. A result with ``goal=None``
    is reported for information, with no goal to meet.
    """

    name: str
    ours: float
    reference: float
    unit: str
    goal: float | None
    higher_is_better: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.ratio >= self.goal if self.higher_is_better else self.ratio <= self.goal
