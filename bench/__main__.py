"""`python -m bench` (or `make bench`): every benchmark, JSON on stdout.

Options: `--only pipeline|service`, `--quick` (fewer repeats).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=["pipeline", "service"], action="append")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    wanted = set(args.only or ["pipeline", "service"])
    report: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()}}
    if "pipeline" in wanted:
        from bench.pipeline_bench import run_pipeline_bench

        report["pipeline"] = run_pipeline_bench(repeats=5 if args.quick else 15)
    if "service" in wanted:
        try:
            from bench.service import run_service_bench
        except ImportError as err:  # the service benchmark arrives with the service
            report["service"] = {"skipped": str(err)}
        else:
            report["service"] = run_service_bench(quick=args.quick)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
