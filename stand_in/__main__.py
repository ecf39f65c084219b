"""``python -m stand_in``: run the SQS + SES v2 stand-in until signalled.

Prints one line ``simulator listening on http://HOST:PORT`` once it accepts connections,
so a parent process started with ``--port 0`` can read the port it got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stand_in.faults import FaultPlan, FaultRule, FaultSpecError
from stand_in.server import start_simulator
from stand_in.ses_events import check_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stand_in",
        description="Fast local stand-in for SQS (JSON protocol) and SES v2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ses-latency", type=float, default=0.02, help="seconds per send")
    parser.add_argument(
        "--max-send-rate",
        type=float,
        default=2000.0,
        help="SendQuota.MaxSendRate reported by GetAccount",
    )
    parser.add_argument(
        "--enforce-rate",
        action="store_true",
        help="answer TooManyRequestsException above --max-send-rate",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="ERROR[,match=REGEX][,rate=P][,count=N]; repeatable; ERROR is "
        "an SES code or throttle|reject|paused|suspended|500|503|drop",
    )
    parser.add_argument("--faults-json", help="a whole fault plan as JSON (wins over flags)")
    parser.add_argument("--seed", type=int, help="seed for probabilistic faults")
    parser.add_argument(
        "--keep-sent",
        type=int,
        default=10_000,
        help="accepted emails kept in full for /_sim/sent (all are counted)",
    )
    parser.add_argument(
        "--events-queue",
        metavar="NAME",
        help="publish the SES events of every accepted email (SNS envelopes) to this SQS "
        "queue of the stand-in; the mailbox simulator's addresses choose the outcome",
    )
    parser.add_argument(
        "--bounce-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="fraction of accepted emails that bounce permanently (needs --events-queue; "
        "drawn with --seed)",
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="fraction of delivered emails that are also opened: an Open event each "
        "(needs --events-queue)",
    )
    return parser


def _plan(args: argparse.Namespace) -> FaultPlan:
    if args.faults_json:
        raw: Any = json.loads(args.faults_json)
        return FaultPlan.from_json(raw)
    return FaultPlan(
        latency=args.ses_latency,
        rules=[FaultRule.from_cli(spec) for spec in args.fault],
        max_send_rate=args.max_send_rate,
        enforce_rate=args.enforce_rate,
        seed=args.seed,
    )


async def _serve(args: argparse.Namespace, plan: FaultPlan) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = await start_simulator(
        args.host,
        args.port,
        faults=plan,
        keep_sent=args.keep_sent,
        events_queue=args.events_queue,
        bounce_rate=args.bounce_rate,
        open_rate=args.open_rate,
    )
    print(f"simulator listening on {sim.endpoint_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional speed-up: absent on Windows
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until SIGINT/SIGTERM; exit 2 on a bad flag."""
    args = _parser().parse_args(argv)
    try:
        plan = _plan(args)
        check_options(args.events_queue, args.bounce_rate, args.open_rate)
    except (FaultSpecError, ValueError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(args, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
