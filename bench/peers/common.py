"""What both peers do the same way, so that only their designs differ.

Each email: render the job's template (Jinja2, compiled once per process) with the
recipient's variables; Simple content, or a Raw MIME message when it has attachments
(read from the ``file:`` base directory for every email, as a real sender must); one
SES v2 ``SendEmail`` through boto3 with SDK retries off (DESIGN §4); one status update.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import jinja2

from bench.workload import Workload

EMAIL_COLUMNS = "id, job_id, to_address, variables, attachments"
AWS_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: int
    template_name: str
    from_address: str
    reply_to: str | None


class StatementRenderer:
    """The job's template, compiled once; renders one recipient's email."""

    def __init__(self, subject: str, text_body: str, html_body: str | None) -> None:
        # Subjects and text/plain bodies must not be HTML-escaped; the HTML body is.
        text_env = jinja2.Environment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701
        )
        html_env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)
        self._subject = text_env.from_string(subject)
        self._text = text_env.from_string(text_body)
        self._html = html_env.from_string(html_body) if html_body else None

    @classmethod
    def load(cls, cur: Any, template_name: str) -> StatementRenderer:
        cur.execute(
            "SELECT subject, text_body, html_body FROM delivery_template"
            " WHERE name = %s AND locale = 'en' ORDER BY version DESC LIMIT 1",
            (template_name,),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no template {template_name!r}")
        return cls(*row)

    def render(self, variables: dict[str, Any]) -> tuple[str, str, str | None]:
        html = self._html.render(variables) if self._html is not None else None
        return self._subject.render(variables), self._text.render(variables), html


def load_job(cur: Any, job_id: int) -> JobInfo:
    cur.execute(
        "SELECT id, template_name, from_address, reply_to FROM delivery_job WHERE id = %s",
        (job_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no job {job_id}")
    return JobInfo(*row)


def read_attachments(raw: str | None, base_dir: Path) -> list[tuple[str, str, bytes]]:
    """(filename, content type, bytes) of each ``file:`` attachment, inside ``base_dir``."""
    if not raw:
        return []
    found = []
    for ref in json.loads(raw):
        path = (base_dir / ref["uri"].removeprefix("file:")).resolve()
        if not path.is_relative_to(base_dir.resolve()):
            raise PermissionError(f"attachment outside {base_dir}")
        found.append((ref["filename"], ref["content_type"], path.read_bytes()))
    return found


def send_request(
    job: JobInfo, row: tuple[Any, ...], renderer: StatementRenderer, base_dir: Path
) -> dict[str, Any]:
    """The ``SendEmail`` arguments for one email row (``EMAIL_COLUMNS``)."""
    email_id, _job_id, to_address, variables, attachments = row
    subject, text, html = renderer.render(json.loads(variables))
    files = read_attachments(attachments, base_dir)
    request: dict[str, Any] = {
        "FromEmailAddress": job.from_address,
        "Destination": {"ToAddresses": [to_address]},
        "EmailTags": [{"Name": "email_id", "Value": str(email_id)}],
    }
    if job.reply_to:
        request["ReplyToAddresses"] = [job.reply_to]
    if not files:
        body: dict[str, Any] = {"Text": {"Data": text, "Charset": "UTF-8"}}
        if html is not None:
            body["Html"] = {"Data": html, "Charset": "UTF-8"}
        request["Content"] = {
            "Simple": {"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body}
        }
        return request
    message = EmailMessage(policy=SMTP)
    message["From"] = job.from_address
    message["To"] = to_address
    message["Subject"] = subject
    if job.reply_to:
        message["Reply-To"] = job.reply_to
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    request["Content"] = {"Raw": {"Data": message.as_bytes()}}
    return request


def mark_sent(cur: Any, email_id: int, message_id: str) -> None:
    cur.execute(
        "UPDATE delivery_email SET status = 'sent', attempts = attempts + 1,"
        " provider_message_id = %s, sent_at = UTC_TIMESTAMP(6) WHERE id = %s",
        (message_id, email_id),
    )


def mark_failed(cur: Any, email_id: int, error: str) -> None:
    cur.execute(
        "UPDATE delivery_email SET status = 'failed', attempts = attempts + 1,"
        " last_error = %s WHERE id = %s",
        (error[:1000], email_id),
    )


def finish_job(cur: Any, job_id: int) -> None:
    """Settle the job from its emails' statuses, as DESIGN §4 says."""
    cur.execute(
        "UPDATE delivery_job j SET"
        " sent_count = (SELECT COUNT(*) FROM delivery_email WHERE job_id = j.id"
        "  AND status = 'sent'),"
        " failed_count = (SELECT COUNT(*) FROM delivery_email WHERE job_id = j.id"
        "  AND status IN ('failed', 'unknown')),"
        " status = IF(failed_count > 0, 'failed', 'completed'),"
        " finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
        (job_id,),
    )


def boto3_ses_client(endpoint_url: str, max_connections: int) -> Any:
    """A boto3 SES v2 client on the stand-in; SDK retries off (one call = one attempt)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "sesv2",
        endpoint_url=endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - the stand-in takes any
        config=Config(
            max_pool_connections=max_connections,
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def peer_result(
    name: str, work: Workload, usage: Any, counts: dict[str, int], **extra: Any
) -> dict[str, Any]:
    """The JSON line a peer prints: what it sent and what that cost."""
    sent = counts.get("sent", 0)
    return {
        "peer": name,
        "emails": work.emails,
        "sent": sent,
        "failed": counts.get("failed", 0),
        "wall_s": usage.wall_s,
        "cpu_s": usage.cpu_s,
        "emails_per_s": round(sent / usage.wall_s, 1) if usage.wall_s else None,
        "emails_per_cpu_s": round(sent / usage.cpu_s, 1) if usage.cpu_s else None,
        "peak_rss_mb": usage.peak_rss_mb,
        "service_cpu_s": usage.service_cpu_s,
        **extra,
    }
