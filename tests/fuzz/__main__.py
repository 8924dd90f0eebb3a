"""`python -m tests.fuzz --endpoint URL -n N --seed S`: the signed-request fuzzer against a running
gateway (the soak: `make soak` runs 100,000). Prints the counts; exits 1 on any answer >= 500 other
than 501 NotImplemented / 503, any error without an S3 error document, any dropped connection or
hang, or a gateway that no longer serves a normal PUT and GET afterwards.

--concurrency C sends with C clients at once (races); --json FILE writes the report (with every failure's reproducer); --pid P (repeatable) also checks
that those processes (the gateway, the dmd) are still alive during and after the run."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

from tests.fuzz.requests import dump_json, run_fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default="http://127.0.0.1:8000", help="the gateway (default %(default)s)")
    parser.add_argument("-n", type=int, default=5000, help="requests to send (default %(default)s)")
    parser.add_argument("--seed", type=int, default=17, help="the seed: same seed, same requests (default %(default)s)")
    parser.add_argument("--prefix", help="bucket name prefix of the prepared world (default fz<seed>)")
    parser.add_argument("--pid", type=int, action="append", default=[], help="a server process that must stay alive")
    parser.add_argument("--json", type=Path, help="write the report, with reproducers, to this file")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="clients sending the requests between them, racing on one world (default 1)")
    parser.add_argument("--progress", type=int, default=5000, help="print counts every N requests (0: never)")
    args = parser.parse_args(argv)

    def alive() -> bool:
        return all(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in args.pid)

    started = time.monotonic()

    def progress(i: int, report) -> None:  # type: ignore[no-untyped-def]
        if args.progress and i % args.progress == 0:
            print(f"{i} requests, {time.monotonic() - started:.0f}s, failures {len(report.failures)}, "
                  f"status {dict(sorted(report.by_status.items()))}", flush=True)

    report = run_fuzz(args.endpoint, args.n, args.seed, prefix=args.prefix, progress=progress,
                      alive=alive if args.pid else None, concurrency=args.concurrency)
    print(report.summary())
    print(report.action_table())
    if args.json:
        args.json.write_text(dump_json(report))
    ok = not report.failures and report.alive_after and report.total == args.n
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
