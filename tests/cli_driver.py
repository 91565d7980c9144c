"""Run many `harness` command lines, each in its own process, from one warmed-up interpreter.

    python tests/cli_driver.py CASES.json RESULTS.json [JOBS]

CASES.json is a list of {"argv": [...], "cwd": DIR, "env": {NAME: VALUE}}. For each case the
driver forks: the child changes to `cwd`, points its file descriptors 1 and 2 at files, runs
`harness.cli.main(argv)` exactly as `python -m harness` does (an uncaught exception prints its
traceback on stderr and exits 1) and exits with its code. Starting Python and importing torch
once instead of once per command line is what keeps hundreds of cases fast; each case still gets
a fresh process (its own stderr, exit code, working directory and environment).
RESULTS.json gets {"code", "stdout", "stderr", "seconds"} per case; a case still running after
CASE_TIMEOUT_S is killed and reported with code "timeout". JOBS children run at once (default 1).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback

CASE_TIMEOUT_S = 60.0


def _child(case: dict, out_path: str, err_path: str) -> None:
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.update(case.get("env", {}))
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        from harness.cli import main

        try:
            code = main(case["argv"])
        except SystemExit as exc:  # argparse, or sys.exit inside a command
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run_cases(cases: list[dict], jobs: int = 1) -> list[dict]:
    """Run the cases, `jobs` children at a time; results in the order of `cases`."""
    results: list[dict | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}  # pid -> (case index, start)
    todo = list(range(len(cases)))[::-1]
    with tempfile.TemporaryDirectory(prefix="cli-driver-") as tmp:
        def finish(pid: int, i: int, t0: float, code) -> None:
            results[i] = {"code": code, "stdout": _read(os.path.join(tmp, f"{i}.out")),
                          "stderr": _read(os.path.join(tmp, f"{i}.err")), "seconds": time.perf_counter() - t0}
            del running[pid]

        while todo or running:
            while todo and len(running) < jobs:
                i = todo.pop()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(cases[i], os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err"))
                running[pid] = (i, time.perf_counter())
            for pid, (i, t0) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    finish(pid, i, t0, os.waitstatus_to_exitcode(status))
                elif time.perf_counter() - t0 > CASE_TIMEOUT_S:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    finish(pid, i, t0, "timeout")
            time.sleep(0.002)
    return results  # type: ignore[return-value]


def main() -> int:
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    # imported once here so that every fork starts warm (argument parsing stays in the child)
    import harness.cli  # noqa: F401
    import harness.evaluation.files  # noqa: F401
    import harness.train.run  # noqa: F401

    results = run_cases(cases, jobs=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
