"""The command line both peers share: where the work and the stand-in come from."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.stand_in import SimulatorProcess
from bench.workload import (
    DEFAULT_ATTACHMENTS_DIR,
    DEFAULT_DATABASE,
    Workload,
    create_schema_and_job,
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emails", type=int, default=2000, help="N, when creating the job")
    parser.add_argument("--attachment-ratio", type=float, default=0.1)
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--db-user", default="root")
    parser.add_argument("--db-password", default="")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument(
        "--job-id", type=int, help="use this draft job (created by bench.workload) as is"
    )
    parser.add_argument("--attachments-dir", type=Path, default=DEFAULT_ATTACHMENTS_DIR)
    parser.add_argument("--endpoint", help="a running stand-in; default: start one")
    parser.add_argument("--ses-latency", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")


@dataclass(frozen=True, slots=True)
class Setting:
    work: Workload
    endpoint_url: str
    simulator: SimulatorProcess | None


@contextlib.contextmanager
def setting(args: argparse.Namespace) -> Iterator[Setting]:
    """The workload (created unless ``--job-id``) and the stand-in (started unless
    ``--endpoint``), torn down afterwards."""
    params = {
        "host": args.db_host,
        "port": args.db_port,
        "user": args.db_user,
        "password": args.db_password,
    }
    if args.job_id is None:
        work = create_schema_and_job(
            params,
            args.emails,
            args.attachment_ratio,
            database=args.database,
            attachments_dir=args.attachments_dir,
        )
    else:
        work = _existing_job(params, args)
    if args.endpoint:
        yield Setting(work, args.endpoint, None)
        return
    with SimulatorProcess(ses_latency=args.ses_latency) as sim:
        yield Setting(work, sim.endpoint_url, sim)


def _existing_job(params: dict[str, object], args: argparse.Namespace) -> Workload:
    from bench.workload import connect

    with connect(params, database=args.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), SUM(attachments IS NOT NULL) FROM delivery_email WHERE job_id = %s",
            (args.job_id,),
        )
        total, with_attachment = cur.fetchone()
    return Workload(
        conn_params=params,
        database=args.database,
        job_id=args.job_id,
        emails=int(total),
        with_attachment=int(with_attachment or 0),
        attachments_dir=args.attachments_dir,
    )
