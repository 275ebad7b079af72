"""Run the benchmarks and print every result as a ratio against its reference."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

import bench


def _goal(r: bench.Result) -> str:
    """">=0.5", or "-" for a result reported for information."""
    if r.goal is None:
        return "-"
    return f"{'>=' if r.higher_is_better else '<='}{r.goal}"


def _verdict(r: bench.Result) -> str:
    return {True: "met", False: "NOT met", None: "info"}[r.met]


def main(argv: list[str]) -> int:
    folder = str(Path(bench.__file__).parent)
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([folder])
                   if m.name.startswith("bench_"))
    chosen = argv or names
    unknown = set(chosen) - set(names)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; available: {names}", file=sys.stderr)
        return 2
    if not chosen:
        print("no benchmarks defined yet")
        return 0
    results = []
    for name in chosen:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        mod = importlib.import_module(f"bench.bench_{name}")
        for r in mod.run():
            results.append(r)
            print(f"  {r.name}: ours {r.ours:.4g} {r.unit}, reference {r.reference:.4g} {r.unit}, "
                  f"ratio {r.ratio:.3f} (goal {_goal(r)}) {_verdict(r).upper()}"
                  + (f"  [{r.note}]" if r.note else ""), flush=True)
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(f"{'benchmark':<58} {'ratio':>8} {'goal':>8}  result")
    for r in results:
        print(f"{r.name:<58} {r.ratio:>8.3f} {_goal(r):>8}  {_verdict(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
