"""A fast stand-in for SQS and SES v2, for benchmarks and QA (moto is too slow for volume).

One aiohttp server speaks the SQS JSON protocol over real in-memory queues (visibility
timeouts, receipt handles, long polling) and SES v2 ``SendEmail``/``GetAccount`` with
configurable latency and injected errors. Run it in-process::

    sim = await start_simulator(port=0, ses_latency=0.02)
    ...  # point aiobotocore/boto3 at sim.endpoint_url; read sim.sent.count
    await sim.close()

or as a process: ``python -m stand_in --port 4566``. It never listens
beyond what it is told, and accepts any credentials.

With an events queue (``events_queue="ses-events"``, ``--events-queue ses-events``) it also
plays SES event publishing: the events of every accepted email (``Send``, ``Delivery``, or
the mailbox simulator's bounces and complaints; ``bounce_rate`` of them bounced) arrive on
that queue of its SQS as SNS notifications (``ses_events``).
"""

from stand_in.faults import FaultPlan, FaultRule, FaultSpecError
from stand_in.server import Simulator, start_simulator
from stand_in.ses_api import SentEmail, SentLog

__all__ = [
    "FaultPlan",
    "FaultRule",
    "FaultSpecError",
    "SentEmail",
    "SentLog",
    "Simulator",
    "start_simulator",
]
