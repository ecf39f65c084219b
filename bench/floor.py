"""The floor of issue 5 item 3: raw aiobotocore SES v2 ``SendEmail`` calls per CPU-second.

One call per email is the work no design can avoid; this measures how many of those calls
one process makes per second of its own CPU time against the stand-in, with nothing else
around them (no database, no queue, no rendering). Our server's emails per CPU-second
divided by this is ``ratio_to_floor``.

    python -m bench.floor [--calls 2000] [--concurrency 32] [--endpoint URL]

Prints one JSON object on stdout. Without ``--endpoint`` it starts its own stand-in (with
20 ms SES latency) in a child process. Bounded: ``--calls`` calls, ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import AioSession, get_session

from bench.stand_in import SimulatorProcess

if TYPE_CHECKING:
    from delivery_server.adapters.aws.direct import SignedJsonClient

WARMUP_CALLS = 100  # connection pool and botocore's per-operation caches, not measured


def email_request(index: int, body_bytes: int) -> dict[str, Any]:
    """A Simple-content send of about the size of a rendered statement email."""
    text = ("Dear customer, your statement is ready. " * (body_bytes // 80 + 1))[: body_bytes // 2]
    html = f"<html><body><p>{text}</p></body></html>"
    return {
        "FromEmailAddress": "statements@bank.example",
        "Destination": {"ToAddresses": [f"customer{index:07d}@example.com"]},
        "Content": {
            "Simple": {
                "Subject": {"Data": f"Your 2025 statement, customer {index}"},
                "Body": {"Text": {"Data": text}, "Html": {"Data": html}},
            }
        },
    }


async def measure(
    endpoint: str,
    calls: int,
    concurrency: int,
    body_bytes: int,
    timeout: float,
    path: str = "sdk",
) -> dict[str, Any]:
    """Make ``calls`` sends, ``concurrency`` at a time; return wall and CPU figures.

    ``path="sdk"``: the floor proper, an aiobotocore client with the SDK's defaults.
    ``path="direct"``: the same call the way our sender makes it (``DELIVERY_AWS_HTTP=
    direct``: ``adapters.aws.direct`` with a fixed User-Agent), to show what is left of an
    email's CPU once the send call itself is paid."""
    session = get_session()
    config = AioConfig(
        max_pool_connections=concurrency, retries={"mode": "standard", "total_max_attempts": 1}
    )
    async with contextlib.AsyncExitStack() as stack:
        ses = await stack.enter_async_context(
            session.create_client(
                "sesv2",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",  # noqa: S106 - the stand-in takes any
                config=config,
            )
        )
        direct = (
            await _direct_client(stack, session, ses, concurrency) if path == "direct" else None
        )

        async def send(request: dict[str, Any]) -> Any:
            if direct is not None:
                return await direct.call("SendEmail", request)
            return await ses.send_email(**request)

        async def run(count: int) -> int:
            next_index = iter(range(count))
            failures = 0

            async def worker() -> None:
                nonlocal failures
                for index in next_index:
                    try:
                        await send(email_request(index, body_bytes))
                    except Exception:  # counted and reported: one failed call must not stop the run
                        failures += 1

            await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
            return failures

        await asyncio.wait_for(run(WARMUP_CALLS), timeout)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        failures = await asyncio.wait_for(run(calls), timeout)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "calls": calls,
        "failures": failures,
        "concurrency": concurrency,
        "path": path,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "calls_per_s": round(calls / wall, 1),
        "calls_per_cpu_s": round(calls / cpu, 1) if cpu > 0 else None,
    }


async def _direct_client(
    stack: contextlib.AsyncExitStack, session: AioSession, ses: Any, concurrency: int
) -> SignedJsonClient:
    from delivery_server.adapters.aws.direct import SignedJsonClient, open_http
    from delivery_server.adapters.aws.session import fixed_user_agent

    credentials = AioCredentials("bench", "bench")
    timeout = aiohttp.ClientTimeout(sock_connect=30, sock_read=30)
    http = await stack.enter_async_context(
        open_http(session, max_connections=concurrency, timeout=timeout)
    )
    return SignedJsonClient(ses, credentials, http, user_agent=fixed_user_agent(session))


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    import uvloop  # the server runs on uvloop: so does its floor

    return uvloop.new_event_loop


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--body-bytes", type=int, default=3000)
    parser.add_argument("--endpoint", help="a running stand-in; default: start one")
    parser.add_argument("--ses-latency", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--path",
        choices=("sdk", "direct"),
        default="sdk",
        help="sdk: an aiobotocore client, SDK defaults (the floor); direct: our sender's path",
    )
    args = parser.parse_args()

    def run(endpoint: str) -> dict[str, Any]:
        with asyncio.Runner(loop_factory=_loop_factory(not args.no_uvloop)) as runner:
            return runner.run(
                measure(
                    endpoint,
                    args.calls,
                    args.concurrency,
                    args.body_bytes,
                    args.timeout,
                    args.path,
                )
            )

    if args.endpoint:
        result = run(args.endpoint)
    else:
        with SimulatorProcess(ses_latency=args.ses_latency) as sim:
            sim_cpu0 = sim.cpu_seconds()
            result = run(sim.endpoint_url)
            result["simulator_cpu_s"] = round(sim.cpu_seconds() - sim_cpu0, 3)
    result["uvloop"] = not args.no_uvloop
    print(json.dumps(result))
    print(
        f"floor ({args.path}): {result['calls_per_cpu_s']} SendEmail calls per CPU-second "
        f"({result['calls_per_s']}/s wall, concurrency {args.concurrency})",
        file=sys.stderr,
    )
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
