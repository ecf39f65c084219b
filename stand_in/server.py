"""The simulator's HTTP server: SQS and SES v2 on one port, plus a small control API.

Control API (no authentication: the simulator only ever listens on loopback):

``GET /_sim/sent[?list=1&limit=N]``
    ``{"count", "duplicates", "first_accepted_at", "last_accepted_at"[, "emails"]}``:
    accepted emails (the last N in full); the times are the simulator's ``time.time()``.
``GET /_sim/stats``
    Requests answered, by SQS target and SES operation (and injected error); with an
    events queue, ``"events"``: events published by type, emails, bounces drawn by rate.
``GET /_sim/faults`` / ``POST /_sim/faults``
    Read or replace the fault plan (see ``faults``); answers the plan now in force.
``POST /_sim/reset``
    Forget queues, sent emails and counters; restore the start-up fault plan.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from stand_in.faults import FaultPlan, FaultSpecError
from stand_in.ses_api import SentLog, SesApi
from stand_in.ses_events import SesEventPublisher, check_options
from stand_in.sqs_api import ACCOUNT_ID, SqsApi
from stand_in.sqs_queue import SimQueue


class Simulator:
    """A running simulator: its endpoint, its state, and how to stop it."""

    def __init__(
        self,
        runner: web.AppRunner,
        endpoint_url: str,
        sqs: SqsApi,
        ses: SesApi,
        initial_faults: dict[str, Any],
        events: SesEventPublisher | None = None,
    ) -> None:
        self._runner = runner
        self.endpoint_url = endpoint_url
        self.sqs = sqs
        self.ses = ses
        self.events = events
        self._initial_faults = initial_faults

    @property
    def events_queue_url(self) -> str | None:
        """The SQS queue the SES events go to (``None`` when events are off)."""
        if self.events is None:
            return None
        return f"{self.endpoint_url}/{ACCOUNT_ID}/{self.events.queue_name}"

    @property
    def sent(self) -> SentLog:
        """The emails SES accepted."""
        return self.ses.sent

    @property
    def faults(self) -> FaultPlan:
        return self.ses.faults

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (latency, error rules, send rate)."""
        self.ses.faults = plan

    def queue(self, name: str) -> SimQueue:
        """A queue by name (``KeyError`` if no one created it)."""
        return self.sqs.queues[name]

    def reset(self) -> None:
        """Back to the state right after start-up."""
        self.sqs.reset()
        self.ses.sent.clear()
        self.ses.calls.clear()
        self.ses.faults = FaultPlan.from_json(self._initial_faults)
        if self.events is not None:
            self.events.reset()

    def stats(self) -> dict[str, Any]:
        stats = {"sqs": dict(self.sqs.calls), "ses": dict(self.ses.calls)}
        if self.events is not None:
            stats["events"] = dict(self.events.counts)
        return stats

    async def close(self) -> None:
        """Stop listening and release parked long polls."""
        if self.events is not None:
            self.events.close()
        self.sqs.reset()
        await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _control_routes(sim: Simulator) -> list[web.RouteDef]:
    async def sent(request: web.Request) -> web.Response:
        with_emails = request.query.get("list", "0") not in ("0", "", "false")
        limit = int(request.query.get("limit", "100"))
        return web.json_response(sim.sent.to_json(with_emails, limit))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(sim.faults.to_json())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            plan = FaultPlan.from_json(json.loads(await request.read()))
        except (FaultSpecError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sim.set_faults(plan)
        return web.json_response(plan.to_json())

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response({"reset": True})

    return [
        web.get("/_sim/sent", sent),
        web.get("/_sim/stats", stats),
        web.get("/_sim/faults", get_faults),
        web.post("/_sim/faults", set_faults),
        web.post("/_sim/reset", reset),
    ]


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    ses_latency: float = 0.02,
    faults: FaultPlan | None = None,
    keep_sent: int = 10_000,
    events_queue: str | None = None,
    bounce_rate: float = 0.0,
    open_rate: float = 0.0,
) -> Simulator:
    """Start SQS + SES v2 on ``host:port`` (0: a free port) in the running event loop.

    ``faults`` (when given) wins over ``ses_latency``. With ``events_queue``, the SES
    events of every accepted email go to that SQS queue (``ses_events``), and
    ``bounce_rate`` of them bounce (drawn with the fault plan's seed), ``open_rate`` of
    the delivered ones are opened as well. Close the result
    when done, or use it as ``async with await start_simulator() as sim``.
    """
    check_options(events_queue, bounce_rate, open_rate)
    plan = faults if faults is not None else FaultPlan(latency=ses_latency)
    sqs, ses = SqsApi(), SesApi(plan, keep=keep_sent)
    events = None
    if events_queue is not None:
        events = SesEventPublisher(
            sqs, events_queue, bounce_rate=bounce_rate, seed=plan.seed, open_rate=open_rate
        )
        ses.on_accepted = events.accepted
    app = web.Application(client_max_size=64 * 1024 * 1024)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    sim = Simulator(runner, "", sqs, ses, plan.to_json(), events)
    app.add_routes(_control_routes(sim))
    app.router.add_post("/v2/email/outbound-emails", ses.send_email)
    app.router.add_get("/v2/email/account", ses.get_account)
    # SQS's JSON protocol posts every action to "/"; registered last as the catch-all.
    app.router.add_post("/{path:.*}", sqs.handle)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    sim.endpoint_url = f"http://{bound_host}:{bound_port}"
    return sim
