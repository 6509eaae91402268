"""Coverage-guided fuzzing of every target with atheris (libFuzzer for Python).

    python -m tests.fuzz.run [--seconds N | --runs N] [--jobs N] [TARGET ...]
    python -m tests.fuzz.run --list
    python -m tests.fuzz.run --replay TARGET FILE ...

Each target runs in a subprocess of its own (a crash in one does not stop the others), with
its committed corpus (``tests/fuzz/corpus/<target>/``) as the seed corpus; what the fuzzer
finds interesting goes to a scratch directory (``--scratch``, under the system temp directory
by default), never into the committed corpus. An input that makes a target raise an
undocumented exception, run past ``--timeout`` seconds or use more than ``--rss-limit-mb`` is
saved under ``tests/fuzz/crashes/<target>/``; a table per target then gives executions,
seconds, executions per second and crashes. The exit status is 1 when anything crashed.
``--replay`` runs a target over saved inputs without atheris and shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from tests.fuzz.targets import CORPUS, CRASHES, TARGETS

ROOT = CORPUS.parents[2]


@attrs.frozen
class Outcome:
    target: str
    executions: int
    seconds: float
    crashes: list[Path]
    returncode: int
    log: Path

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else 0.0


def _stat(log: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", log)
    if found:
        return int(found[-1])
    return 0


def fuzz_one(
    target: str, *, seconds: int | None, runs: int | None, scratch: Path, timeout: int,
    rss_limit_mb: int, max_len: int | None = None,
) -> Outcome:
    crashes = CRASHES / target
    crashes.mkdir(parents=True, exist_ok=True)
    work = scratch / target
    work.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    args = [
        str(work),
        str(CORPUS / target),
        f"-artifact_prefix={crashes}/",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_limit_mb}",
        "-print_final_stats=1",
    ]
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    if runs is not None:
        args.append(f"-runs={runs}")
    if max_len is not None:
        args.append(f"-max_len={max_len}")
    log = scratch / f"{target}.log"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.child", target, *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
        )
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    executions = _stat(text, "number_of_executed_units")
    if not executions:
        # libFuzzer prints no final stats when a crash ends the run: take its last status line.
        done = re.findall(r"#(\d+)\s", text)
        executions = int(done[-1]) if done else 0
    new = sorted(set(crashes.iterdir()) - before)
    return Outcome(target, executions, elapsed, new, proc.returncode, log)


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("target", "executions", "seconds", "exec/s", "crashes")]
    for o in outcomes:
        crashed = len(o.crashes) or (1 if o.returncode else 0)
        rows.append((o.target, str(o.executions), f"{o.seconds:.0f}", f"{o.rate:.0f}",
                     str(crashed)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def replay(target: str, files: Sequence[str]) -> int:
    function = TARGETS[target]
    for name in files:
        print(f"{target} <- {name}", flush=True)
        function(Path(name).read_bytes())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: every target")
    parser.add_argument("--seconds", type=int, help="time per target (default 60)")
    parser.add_argument("--runs", type=int, help="executions per target")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a crash")
    parser.add_argument("--rss-limit-mb", type=int, default=1024)
    parser.add_argument("--max-len", type=int,
                        help="longest input tried (default: libFuzzer's guess from the corpus)")
    parser.add_argument("--scratch", type=Path, help="where new corpus entries and logs go")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--replay", nargs="+", metavar="ARG",
                        help="TARGET FILE...: run saved inputs without atheris")
    args = parser.parse_args(argv)
    if args.list:
        for name in sorted(TARGETS):
            print(name)
        return 0
    if args.replay:
        return replay(args.replay[0], args.replay[1:])
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)} (see --list)")
    seconds = args.seconds if args.seconds is not None or args.runs is not None else 60
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fep-fuzz-"))
    names = args.targets or sorted(TARGETS)
    print(f"fuzzing {len(names)} target(s); scratch corpus and logs in {scratch}", flush=True)

    def one(name: str) -> Outcome:
        outcome = fuzz_one(name, seconds=seconds, runs=args.runs, scratch=scratch,
                           timeout=args.timeout, rss_limit_mb=args.rss_limit_mb,
                           max_len=args.max_len)
        status = "ok" if not outcome.returncode else f"CRASH (see {outcome.log})"
        print(f"  {name}: {outcome.executions} executions in {outcome.seconds:.0f} s, {status}",
              flush=True)
        for crash in outcome.crashes:
            print(f"    saved {crash.relative_to(ROOT)}", flush=True)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(one, names))
    print(table(outcomes))
    return 1 if any(o.returncode for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
