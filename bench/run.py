"""The benchmark of issue 5, in one run: our server, the floor and the peers, same stand-in.

    python -m bench.run --emails N [--peer-emails M] [--eed-emails E] [--servers K]
                        [--tracking-off-emails T] [--bounce-rate R]
                        [--skip-peers] [--json-out FILE]

1. starts the AWS stand-in (a child process, 20 ms per SES send);
2. **ours, tracking on**: a fresh MariaDB database built by our migrations, one job of N
   statement emails (per-recipient variables, 10 % with a ~100 KB PDF), K
   ``delivery-server run`` processes; the job is set to ``processing`` and its figures end
   when the job row says it finished (``bench.ours`` says what is measured and how). A
   second stand-in publishes the SES events of every send (``Send``, then ``Delivery``,
   ``Bounce`` for R = 1 %) and our servers' trackers record them; the run waits until every
   event is recorded (``bench.tracking``);
3. **ours, tracking off**: the same job of T (default N) emails, the same way, without
   an events queue: the cost of tracking is the difference between the two rows;
4. **floor**: raw aiobotocore ``SendEmail`` calls per CPU-second against the same stand-in
   (``bench.floor``);
5. **peers** on a slice of M emails: Celery (threads x 32, Redis, boto3) and a model of the
   old job manager (EED: a thread per email, a fixed 1 s poll delay) on E emails, because
   its rate is bound by that poll delay, not by its CPU.

Prints a table, the command that reproduces it, and ends with exactly one line:

    RESULT emails_per_s=X ratio_to_floor=Y ratio_to_celery=Z peak_rss_mb=M first_send_s=F
           events_per_s=E emails_per_s_tracking_off=T db_ms_per_email=D
           db_round_trips_per_email=Q

(on one line). Every figure but the last is of the run with tracking on;
``ratio_to_floor`` = our emails per CPU-second / raw send calls per CPU-second;
``ratio_to_celery`` = our emails per CPU-second / Celery's (``na`` with ``--skip-peers``);
``events_per_s`` = SES events recorded per second; ``emails_per_s_tracking_off`` = the
tracking-off run's emails/s (``na`` with ``--tracking-off-emails 0``);
``db_ms_per_email`` = mariadbd's CPU-ms per email, ``db_round_trips_per_email`` = the
statements our servers sent MariaDB per email (``bench.dbstats``), both over the job.
Exit code 1 when any email was not sent exactly once, an event was not recorded, or a
part did not finish.
Every part is bounded (``--timeout`` per part); every child process is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench.ours import base_env, drop_database, run_ours
from bench.report import result_line, table
from bench.stand_in import REPO, SimulatorProcess
from bench.tracking import DEFAULT_BOUNCE_RATE, EVENTS_QUEUE
from bench.workload import DEFAULT_ATTACHMENTS_DIR

DEFAULT_DATABASE = "delivery_bench_ours"
PEER_DATABASE = "delivery_bench_peers"
RUNS_DIR = Path(tempfile.gettempdir()) / "delivery_bench" / "runs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--emails", type=int, default=20_000, help="N: our job's emails")
    parser.add_argument("--peer-emails", type=int, help="Celery's slice (default min(N, 20000))")
    parser.add_argument("--eed-emails", type=int, help="EED's slice (default: --peer-emails)")
    parser.add_argument("--servers", type=int, default=1, help="our server processes")
    parser.add_argument(
        "--tracking-off-emails",
        type=int,
        help="T: the job of the run without tracking (default: N; 0 skips that run)",
    )
    parser.add_argument(
        "--bounce-rate",
        type=float,
        default=DEFAULT_BOUNCE_RATE,
        help="share of emails the stand-in bounces in the tracking run (default: 0.01)",
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        help="share of delivered emails the stand-in also reports opened in the tracking "
        "run: 1.0 makes three events per email (default: 0)",
    )
    parser.add_argument(
        "--account-rate",
        type=float,
        help="the SES account's MaxSendRate the stand-ins of both our runs advertise (our "
        "servers share it as the fleet's rate; default: none, sends as fast as they can)",
    )
    parser.add_argument(
        "--tracker-process",
        action="store_true",
        help="in the tracking run, the tracker in a process of its own (run --role tracker) "
        "beside servers that run without it; its CPU and RSS count as ours",
    )
    parser.add_argument("--skip-peers", action="store_true", help="ours and the floor only")
    parser.add_argument("--floor-calls", type=int, default=4000)
    parser.add_argument("--attachment-ratio", type=float, default=0.1)
    parser.add_argument("--ses-latency", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, help="seconds per part (default: by N)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="ours; recreated")
    parser.add_argument("--peer-database", default=PEER_DATABASE, help="the peers'; recreated")
    parser.add_argument("--redis-db", type=int, default=11, help="Celery's broker db; flushed")
    parser.add_argument("--attachments-dir", type=Path, default=DEFAULT_ATTACHMENTS_DIR)
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--db-user", default="root")
    parser.add_argument("--db-password", default="")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="DELIVERY_X=V",
        help="extra setting for our servers (repeatable; shown in the report)",
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="profile our servers (collapsed stacks in the logs)"
    )
    parser.add_argument("--keep-databases", action="store_true", help="do not drop them")
    parser.add_argument("--json-out", type=Path, help="also write every figure as JSON here")
    args = parser.parse_args(argv)
    if args.emails < 1 or args.servers < 1:
        parser.error("--emails and --servers must be at least 1")
    if args.tracking_off_emails is None:
        args.tracking_off_emails = args.emails
    if args.tracking_off_emails < 0:
        parser.error("--tracking-off-emails must be 0 (skip that run) or more")
    if not 0.0 <= args.bounce_rate <= 1.0:
        parser.error(f"--bounce-rate {args.bounce_rate} must be between 0 and 1")
    if args.peer_emails is None:
        args.peer_emails = min(args.emails, 20_000)
    if args.eed_emails is None:
        args.eed_emails = args.peer_emails
    if args.timeout is None:
        # Generous: ten times what the slowest part needs at its expected rate.
        args.timeout = max(120.0, args.emails / 50, args.peer_emails / 10)
    return args


class Interrupted(Exception):
    """SIGTERM/SIGINT: unwind so that every ``finally`` stops its children."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_child(command: list[str], timeout: float, what: str) -> dict[str, Any]:
    """Run a bench module in its own session; its last stdout line is its JSON result.
    On timeout (or an interruption) the whole session is killed."""
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise
    finally:
        # Anything the child left behind in its session (Celery's workers) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no result (exit {proc.returncode}): {err[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_code"] = proc.returncode
    return result


def run_floor(args: argparse.Namespace, endpoint: str, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.floor", "--endpoint", endpoint, *extra]
    command += ["--calls", str(args.floor_calls), "--timeout", str(args.timeout)]
    return run_child(command, args.timeout + 60, "bench.floor")


def combine_floors(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A floor measured just before and just after ours: their totals pooled."""
    calls = before["calls"] + after["calls"]
    cpu = before["cpu_s"] + after["cpu_s"]
    wall = before["wall_s"] + after["wall_s"]
    return {
        **before,
        "calls": calls,
        "failures": before["failures"] + after["failures"],
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "calls_per_s": round(calls / wall, 1),
        "calls_per_cpu_s": round(calls / cpu, 1),
        "before_calls_per_cpu_s": before["calls_per_cpu_s"],
        "after_calls_per_cpu_s": after["calls_per_cpu_s"],
    }


def _peer_command(args: argparse.Namespace, module: str, emails: int, endpoint: str) -> list[str]:
    return [
        sys.executable, "-m", module,
        "--emails", str(emails),
        "--attachment-ratio", str(args.attachment_ratio),
        "--endpoint", endpoint,
        "--database", args.peer_database,
        "--attachments-dir", str(args.attachments_dir),
        "--db-host", args.db_host,
        "--db-port", str(args.db_port),
        "--db-user", args.db_user,
        "--db-password", args.db_password,
        "--timeout", str(args.timeout),
    ]  # fmt: skip


def run_peers(args: argparse.Namespace, endpoint: str) -> dict[str, dict[str, Any]]:
    results = {}
    command = _peer_command(args, "bench.peers.celery_peer", args.peer_emails, endpoint)
    command += ["--redis-db", str(args.redis_db)]
    print(f"celery: {args.peer_emails:,} emails ...", file=sys.stderr)
    results["celery"] = run_child(command, args.timeout + 120, "celery peer")
    command = _peer_command(args, "bench.peers.eed", args.eed_emails, endpoint)
    print(f"eed: {args.eed_emails:,} emails ...", file=sys.stderr)
    results["eed"] = run_child(command, args.timeout + 120, "eed peer")
    return results


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def reproduce(argv: list[str]) -> str:
    return "python -m bench.run " + " ".join(shlex.quote(a) for a in argv)


def ok(report: dict[str, Any]) -> bool:
    peers_ok = all(
        p.get("finished") and p.get("sent") == p.get("emails")
        for p in report.get("peers", {}).values()
    )
    floors_ok = report["floor"]["failures"] == 0 and report["floor_tuned"]["failures"] == 0
    ours = report["ours"]
    off = report.get("ours_tracking_off")
    ours_ok = ours["exactly_once"] and ours["tracking_complete"]
    off_ok = off is None or off["exactly_once"]
    return bool(ours_ok and off_ok) and floors_ok and peers_ok


def run_both(
    args: argparse.Namespace, sim: SimulatorProcess, params: dict[str, Any], run_dir: Path
) -> dict[str, Any]:
    """Ours with tracking on, then (unless skipped) off: ``ours``, ``ours_tracking_off``."""
    runs: dict[str, Any] = {}
    # An account rate is the stand-in's GetAccount answer; the floors and the peers keep
    # the unlimited one (they do not read it).
    account = ("--max-send-rate", str(args.account_rate)) if args.account_rate else ()
    # A stand-in of its own publishes the events: the tracking-off run and the floors
    # use one that does not spend its CPU on events nobody reads.
    with SimulatorProcess(
        ses_latency=args.ses_latency,
        extra_args=account,
        events_queue=EVENTS_QUEUE,
        bounce_rate=args.bounce_rate,
        open_rate=args.open_rate,
    ) as tracked:
        print(
            f"ours, tracking on: {args.emails:,} emails, {args.servers} server(s) ...",
            file=sys.stderr,
        )
        runs["ours"] = run_ours(
            args, tracked, params, run_dir / "tracking-on", emails=args.emails, tracking=True
        )
    if args.tracking_off_emails:
        print(f"ours, tracking off: {args.tracking_off_emails:,} emails ...", file=sys.stderr)
        with contextlib.ExitStack() as stack:
            untracked = sim
            if account:
                untracked = stack.enter_context(
                    SimulatorProcess(ses_latency=args.ses_latency, extra_args=account)
                )
            runs["ours_tracking_off"] = run_ours(
                args,
                untracked,
                params,
                run_dir / "tracking-off",
                emails=args.tracking_off_emails,
                tracking=False,
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params = {
        "host": args.db_host,
        "port": args.db_port,
        "user": args.db_user,
        "password": args.db_password,
    }
    run_dir = RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    report: dict[str, Any] = {"machine": machine(), "command": reproduce(argv)}
    with stop_on_signals(), SimulatorProcess(ses_latency=args.ses_latency) as sim:
        try:
            # The floors just before and just after ours, pooled: a shared machine drifts.
            print("floor ...", file=sys.stderr)
            ours_path = ("--path", "direct")  # the send call as our sender makes it
            before = (
                run_floor(args, sim.endpoint_url),
                run_floor(args, sim.endpoint_url, *ours_path),
            )
            report.update(run_both(args, sim, params, run_dir))
            print("floor again ...", file=sys.stderr)
            after = (
                run_floor(args, sim.endpoint_url),
                run_floor(args, sim.endpoint_url, *ours_path),
            )
            report["floor"] = combine_floors(before[0], after[0])
            report["floor_tuned"] = combine_floors(before[1], after[1])
            if not args.skip_peers:
                report["peers"] = run_peers(args, sim.endpoint_url)
        finally:
            if not args.keep_databases:
                for database in (args.database, args.peer_database):
                    with contextlib.suppress(Exception):
                        drop_database(params, database)
    report["server_env"] = args.server_env
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    m = report["machine"]
    print(f"\nmachine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}")
    if args.server_env:
        print(f"server settings: {' '.join(args.server_env)}")
    print()
    print(table(report))
    print(f"\nreproduce: {report['command']}")
    print(f"server logs: {run_dir}")
    passed = ok(report)
    if not passed:
        print(
            "CHECK FAILED: an email was not sent exactly once, an event was not recorded, "
            "or a part did not finish"
        )
    print(result_line(report))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
