"""`make bench` (`python -m tests.bench`): our server side by side with moto and Ceph RGW, in one run.

Owns the orchestration: start each server in turn, drive it with the same load generator
(tests/bench/s3load.py), sample the servers' memory (tests/bench/peers.py), stop what we started,
then print one table (workload | ours | moto | ceph | ours/best peer) and, with --json, write the
numbers to a file. The dmd-level benches (data_bench.py, rpc_bench.py) run against a dmd of their
own when those modules exist.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from tests.bench.peers import PeerUnavailable, RssSampler, Server, start_ceph, start_moto, start_ours
from tests.bench.s3load import FULL, MiB, QUICK, WORKLOAD_NAMES, WORKLOADS, RowResult, Sizes, Target, \
    run_workloads, workload_label
from tests.procs import start_dmd

SERVERS = ["ours", "ours_pg", "ours_pg2", "moto", "ceph"]   # ours_pg*: metadata on PostgreSQL (issue 19)
DMD_BENCHES = ["dmd_data", "dmd_rpc"]
DMD_DATA_SIZE_FULL, DMD_DATA_SIZE_QUICK = 1 << 30, 64 * MiB
CLIENT_BOUND_CPU = 0.9  # client CPU / wall above this: the row may be measuring the load generator
BIG_WORKLOADS = {w.name for w in WORKLOADS if w.big}
# What a reader of the table must know to compare a row fairly.
# Rows that also get a "CPU µs per op" line: the server processes' CPU time over the row / its ops.
CPU_ROWS = ("put_c32", "get_c32", "head_c32")
ROLE_SHORT = {"gateway": "gw", "ceph-rgw": "rgw", "ceph-osd": "osd"}
FOOTNOTES = {
    ("ceph", "copy"): "Ceph RGW copies inside one cluster by reference (no data is moved)",
}


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOAD_NAMES + DMD_BENCHES))
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--skip-ceph", action="store_true", help="do not start (or install) Ceph RGW")
    p.add_argument("--quick", action="store_true", help="much smaller counts: a smoke run of the bench itself")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the results as JSON")
    p.add_argument("--gateway-workers", type=int, default=1, help="worker processes of our gateway (default 1)")
    args = p.parse_args(argv)
    known = set(WORKLOAD_NAMES + DMD_BENCHES)
    args.only_set = set(args.only.split(",")) if args.only else known
    unknown = args.only_set - known
    if unknown:
        p.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(known))}")
    args.server_list = [s for s in args.servers.split(",") if s]
    if bad := set(args.server_list) - set(SERVERS):
        p.error(f"unknown server(s) {', '.join(sorted(bad))}")
    return args


def start_server(name: str, tmp: Path, args: argparse.Namespace) -> Server:
    if name == "ours":
        try:
            return start_ours(tmp / "ours", workers=args.gateway_workers)
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise PeerUnavailable(str(exc)) from exc
    if name in ("ours_pg", "ours_pg2"):   # issue 19
        from tests.bench.pg_peer import start_ours_pg
        try:
            return start_ours_pg(name, tmp)
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise PeerUnavailable(str(exc)) from exc
    if name == "moto":
        return start_moto(tmp / "moto")
    if args.skip_ceph:
        raise PeerUnavailable("--skip-ceph")
    return start_ceph(tmp / "ceph")


def fmt_value(r: RowResult | None) -> str:
    if r is None:
        return "-"
    if r.value is None:
        return "n/a"
    text = f"{r.value:,.0f}" if r.value >= 100 else f"{r.value:,.1f}"
    return text + (f" ({r.errors} err)" if r.errors else "")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each role's process and its live children (gateway workers);
    a role whose process cannot be read is left out."""
    out: dict[str, float] = {}
    for role, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        out[role] = total
    return out


def cpu_per_op(before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
    """µs of CPU per successful op, per role."""
    if ops <= 0:
        return {}
    return {role: round((after[role] - before[role]) * 1e6 / ops, 1) for role in before if role in after}


def fmt_cpu(r: RowResult | None) -> str:
    """'gw 210 / dmd 95': µs of CPU per op of each server process; '-' when no pid was known."""
    if r is None or not r.cpu_us_per_op:
        return "-"
    return " / ".join(f"{ROLE_SHORT.get(role, role)} {us:,.0f}" for role, us in r.cpu_us_per_op.items())


async def measure(name: str, server: Server, sizes: Sizes, names: set[str]) -> dict[str, Any]:
    """All S3 rows against one running server, with its memory sampled all along."""
    sampler = RssSampler(server.pids)
    sampler.start()
    target = Target(name, server.endpoint, server.access_key, server.secret_key)
    cpu_before: dict[str, dict[str, float]] = {}

    def row_started(workload: str, _: str) -> None:
        sampler.open_window(workload)
        cpu_before[workload] = cpu_seconds(server.pids)

    def row_done(r: RowResult) -> None:
        r.peak_rss = sampler.close_window(r.workload)
        if r.value is not None and r.workload in cpu_before:
            r.cpu_us_per_op = cpu_per_op(cpu_before.pop(r.workload), cpu_seconds(server.pids), r.ops)
        detail = (f"{r.ops} ok, {r.errors} err, {r.seconds:.2f} s, client cpu {r.client_cpu:.0%}"
                  if r.value is not None else r.error)
        if r.workload in CPU_ROWS and r.cpu_us_per_op:
            detail += f", server cpu/op {fmt_cpu(r)} µs"
        say(f"  {name:5} {workload_label(r.workload, sizes):34} {fmt_value(r):>14} {r.unit:7} {detail}")

    try:
        rows = await run_workloads(target, sizes, [n for n in WORKLOAD_NAMES if n in names],
                                   on_row=row_started, on_row_done=row_done)
    finally:
        peaks = sampler.stop()
    big_peak: dict[str, int] = {}
    for r in rows.values():
        if r.workload in BIG_WORKLOADS:
            for role, rss in r.peak_rss.items():
                big_peak[role] = max(big_peak.get(role, 0), rss)
    return {"available": True, "endpoint": server.endpoint, "pids": server.pids,
            "peak_rss": peaks, "peak_rss_big": big_peak, "rows": {k: v.to_json() for k, v in rows.items()},
            "_rows": rows}


async def dmd_benches(tmp: Path, sizes_quick: bool, names: set[str]) -> dict[str, Any]:
    """The data daemon and metadata RPC benches (other modules), against a dmd of their own."""
    out: dict[str, Any] = {}
    wanted = [n for n in DMD_BENCHES if n in names]
    if not wanted:
        return out
    dmd = None
    try:
        dmd = start_dmd(tmp / "dmd-bench")
        assert dmd.popen is not None
        for name in wanted:
            try:
                if name == "dmd_data":
                    from tests.bench.data_bench import bench_data
                    size = DMD_DATA_SIZE_QUICK if sizes_quick else DMD_DATA_SIZE_FULL
                    out[name] = await bench_data("127.0.0.1", dmd.data_port, size=size, pid=dmd.popen.pid)
                else:
                    from tests.bench.rpc_bench import bench_rpc
                    out[name] = await bench_rpc("127.0.0.1", dmd.metadata_port)
            except ImportError as exc:
                out[name] = {"error": f"not available ({exc})"}
            except Exception as exc:  # noqa: BLE001 - another helper's bench failing must not lose our table
                out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            say(f"  dmd   {name:34} {json.dumps(out[name], default=str)[:200]}")
    except (RuntimeError, TimeoutError, OSError) as exc:
        for name in wanted:
            out.setdefault(name, {"error": f"not available (dmd did not start: {exc})"})
    finally:
        if dmd is not None:
            dmd.stop()
    return out


def ratio(rows: dict[str, dict[str, RowResult]], workload: str) -> float | None:
    ours = rows.get("ours", {}).get(workload)
    peers = [r.value for s, rs in rows.items() if not s.startswith("ours") and (r := rs.get(workload)) and r.value]
    if ours is None or ours.value is None or not peers:
        return None
    return ours.value / max(peers)


def print_report(result: dict[str, Any], sizes: Sizes, servers: list[str]) -> None:
    rows: dict[str, dict[str, RowResult]] = {s: result["servers"][s].get("_rows", {}) for s in servers
                                             if s in result["servers"]}
    workloads = [n for n in WORKLOAD_NAMES if any(n in rs for rs in rows.values())]
    header = ["workload", *servers, "ours/best peer"]
    table = [header]
    notes: list[str] = []
    for n in workloads:
        unit = next(w.unit for w in WORKLOADS if w.name == n)
        line = [f"{workload_label(n, sizes)} ({unit})"]
        for s in servers:
            r = rows.get(s, {}).get(n)
            line.append(fmt_value(r))
            if r is not None and r.error:
                notes.append(f"{s} {n}: {'n/a' if r.value is None else 'first error'}: {r.error}")
            if r is not None and r.value is not None and (s, n) in FOOTNOTES:
                notes.append(f"{s} {n}: {FOOTNOTES[s, n]}")
            if r is not None and r.client_cpu >= CLIENT_BOUND_CPU:
                notes.append(f"{s} {n}: the load generator used {r.client_cpu:.0%} of a core: "
                             "this row may measure the client")
        q = ratio(rows, n)
        line.append(f"{q:.2f}x" if q is not None else "-")
        table.append(line)
        if n in CPU_ROWS:
            table.append(["  server CPU per op (µs)", *(fmt_cpu(rows.get(s, {}).get(n)) for s in servers), ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    say("")
    for i, row in enumerate(table):
        say(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            say("-+-".join("-" * w for w in widths))
    ours_rows = rows.get("ours", {})
    for plain, sealed in (("put_big", "put_big_sse"), ("get_big", "get_big_sse")):   # issue 13: >= 0.70
        p, e = ours_rows.get(plain), ours_rows.get(sealed)
        if p is not None and e is not None and p.value and e.value is not None:
            say(f"ours {sealed}/{plain} (SSE-S3 bucket vs plaintext, same run): {e.value / p.value:.2f}")
    for s in servers:
        info = result["servers"].get(s, {})
        if not info.get("available"):
            say(f"{s}: not available ({info.get('reason', 'not run')})")
    if notes:
        say("\nnotes:")
        for n in notes:
            say(f"  {n}")
    say("\npeak RSS (MiB)        whole run   during the large transfers")
    for s in servers:
        info = result["servers"].get(s, {})
        for role, rss in info.get("peak_rss", {}).items():
            big = info.get("peak_rss_big", {}).get(role)
            say(f"  {s + ' ' + role:20} {rss / MiB:9.0f}   {big / MiB if big else 0:9.0f}")
    for name, data in result.get("dmd", {}).items():
        say(f"\n{name}: {json.dumps(data, default=str)}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "quick": args.quick, "sizes": asdict(sizes), "servers": {}}
    s3_rows = args.only_set & set(WORKLOAD_NAMES)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        if s3_rows:
            for name in args.server_list:
                say(f"[{time.monotonic() - t0:6.1f} s] starting {name}")
                try:
                    server = start_server(name, tmp, args)
                except PeerUnavailable as exc:
                    say(f"{name}: not available ({exc})")
                    result["servers"][name] = {"available": False, "reason": str(exc)}
                    continue
                try:
                    result["servers"][name] = await measure(name, server, sizes, s3_rows)
                finally:
                    server.stop()
        if args.only_set & set(DMD_BENCHES):
            say(f"[{time.monotonic() - t0:6.1f} s] dmd-level benches")
            result["dmd"] = await dmd_benches(tmp, args.quick, args.only_set)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["ratios"] = {n: ratio({s: v.get("_rows", {}) for s, v in result["servers"].items()}, n)
                        for n in WORKLOAD_NAMES if n in s3_rows}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run(args))
    print_report(result, QUICK if args.quick else FULL, [s for s in args.server_list if s in result["servers"]])
    say(f"\ntotal {result['seconds']} s")
    if args.json:
        for info in result["servers"].values():
            info.pop("_rows", None)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        say(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
