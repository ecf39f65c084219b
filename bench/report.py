"""The bench's report: the table of one run, the tracking line, and the RESULT line.

``report`` is what ``bench.run`` gathers: ``ours`` (tracking on), ``ours_tracking_off``
(the same job without the tracker, when run), ``floor``, ``floor_tuned``, ``peers`` and
``machine``.
"""

from __future__ import annotations

from typing import Any

HEADER = (
    "| run | emails | emails/s | CPU s per 1,000 | emails per CPU-s | peak RSS MB "
    "| first send s | DB CPU-ms per email | DB round trips per email | notes |"
)
PEER_NAMES = {"celery": "Celery", "eed": "EED model (old job manager)"}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _per_1000(cpu: float | None, count: int | None) -> float | None:
    return cpu / count * 1000 if cpu and count else None


def _ratio(ours_rate: float | None, other: float | None) -> str:
    return f"{ours_rate / other:.2f}" if ours_rate and other else "na"


def _plain(value: float | None, digits: int = 1) -> str:
    return "na" if value is None else f"{value:.{digits}f}"


def _ours_row(ours: dict[str, Any]) -> str:
    servers = f"{ours['servers']} server process{'es' if ours['servers'] > 1 else ''}"
    if ours.get("tracker_process"):
        servers += " + 1 tracker process"
    label = (
        f"**ours**, tracking on ({servers})"
        if ours.get("tracking")
        else f"ours, tracking off ({servers})"
    )
    once = "exactly once ✓" if ours["exactly_once"] else "NOT exactly once ✗"
    notes = (
        f"{once}; sim {_fmt(ours['simulator_accepted'])} accepted, "
        f"{ours['simulator_duplicates']} duplicates"
    )
    if ours.get("tracking"):
        complete = "all" if ours["tracking_complete"] else "NOT all ✗"
        notes += (
            f"; {_fmt(ours['events_recorded'])} events recorded ({complete}), "
            f"{_fmt(ours['events_per_s'])} events/s"
        )
    return (
        f"| {label} | {_fmt(ours['emails'])} | {_fmt(ours['emails_per_s'])} "
        f"| {_fmt(ours['cpu_s_per_1000'], 2)} | {_fmt(ours['emails_per_cpu_s'])} "
        f"| {_fmt(ours['peak_rss_mb'])} | {_fmt(ours['first_send_s'], 2)} "
        f"| {_fmt(ours.get('db_ms_per_email'), 3)} "
        f"| {_fmt(ours.get('db_round_trips_per_email'), 3)} | {notes} |"
    )


def _floor_row(label: str, floor: dict[str, Any], notes: str) -> str:
    per_1000 = _fmt(_per_1000(floor["cpu_s"], floor["calls"]), 2)
    return (
        f"| {label} | {_fmt(floor['calls'])} calls | {_fmt(floor['calls_per_s'])} | {per_1000} "
        f"| {_fmt(floor['calls_per_cpu_s'])} | — | — | — | — | {notes} |"
    )


def _peer_rows(peers: dict[str, dict[str, Any]]) -> list[str]:
    celery_emails = peers["celery"]["emails"] if "celery" in peers else 0

    def eed_notes(r: dict[str, Any]) -> str:
        smaller = ", smaller slice" if r["emails"] < celery_emails else ""
        return (
            f"thread per email, {r.get('poll_delay_s')} s poll delay: rate bound by the poll"
            + smaller
        )

    notes = {
        "celery": lambda r: f"{r.get('pool')} pool x {r.get('concurrency')}, Redis broker, boto3",
        "eed": eed_notes,
    }
    rows = []
    for key in ("celery", "eed"):
        peer = peers.get(key)
        if peer is None:
            continue
        rows.append(
            f"| {PEER_NAMES[key]} | {_fmt(peer['emails'])} | {_fmt(peer['emails_per_s'])} "
            f"| {_fmt(_per_1000(peer['cpu_s'], peer['sent']), 2)} "
            f"| {_fmt(peer['emails_per_cpu_s'])} | {_fmt(peer['peak_rss_mb'])} "
            f"| {_fmt(peer.get('first_send_s'), 2)} | {_fmt(_peer_db_ms(peer), 3)} | — "
            f"| {notes[key](peer)} |"
        )
    return rows


def _peer_db_ms(peer: dict[str, Any]) -> float | None:
    """MariaDB's CPU-ms per email while the peer ran (its job table lives there too)."""
    services = peer.get("service_cpu_s") or {}
    cpu = sum(v for k, v in services.items() if k.startswith(("mariadbd", "mysqld")))
    return cpu / peer["sent"] * 1000 if cpu and peer.get("sent") else None


def services_line(ours: dict[str, Any], nproc: int | None) -> str:
    """Where the machine's CPU went while one of our runs sent its job."""
    available = ours["wall_s"] * (nproc or 1)
    which = "with tracking" if ours.get("tracking") else "without tracking"
    return (
        f"Alongside ours {which} ({_fmt(ours['wall_s'], 1)} s): MariaDB "
        f"{_fmt(ours['mariadb_cpu_s'], 1)} CPU-s, stand-in {_fmt(ours['simulator_cpu_s'], 1)} "
        f"CPU-s, our servers {_fmt(ours['cpu_s'], 1)} CPU-s, everything else on the machine "
        f"{_fmt(ours['other_cpu_s'], 1)} CPU-s (of {_fmt(available, 0)} available)."
        + _statements_note(ours)
    )


def _statements_note(ours: dict[str, Any]) -> str:
    """The servers' statements as MariaDB counted them (``bench.dbstats``)."""
    counted = ours.get("db_statements")
    if not counted:
        return " MariaDB kept no user statistics: no statement counts."
    return (
        f" Our servers' statements: {_fmt(counted['statements'])} (SELECT "
        f"{_fmt(counted['selects'])}, INSERT/UPDATE/DELETE {_fmt(counted['updates'])}, "
        f"other incl. COMMIT {_fmt(counted['others'])}), MariaDB's threads serving them "
        f"{_fmt(counted['cpu_s'], 1)} CPU-s."
    )


def tracking_line(ours: dict[str, Any], off: dict[str, Any] | None) -> str:
    """What the tracker did with the stand-in's events, and what it cost the sends."""
    by_type = ", ".join(f"{kind} {_fmt(n)}" for kind, n in sorted(ours["events_by_type"].items()))
    statuses = ", ".join(f"{_fmt(n)} {s}" for s, n in sorted(ours["delivery_counts"].items()))
    outcomes = ", ".join(f"{k} {_fmt(int(n))}" for k, n in sorted(ours["event_outcomes"].items()))
    drain = (
        f"the last {_fmt(ours['drain_s'], 2)} s after the job ended "
        f"(our servers' CPU meanwhile {_fmt(ours['drain_cpu_s'], 2)} s)"
        if ours["drain_s"] is not None
        else "NOT all by the timeout"
    )
    line = (
        f"Tracking: the stand-in published {_fmt(ours['events_published'])} events "
        f"({by_type}; {_fmt(ours['bounced_by_rate'])} emails bounced by rate); our servers "
        f"recorded {_fmt(ours['events_recorded'])} ({_fmt(ours['events_per_s'])} events/s "
        f"over {_fmt(ours['events_span_s'], 1)} s), {drain}; outcomes: {outcomes}; "
        f"delivery status: {statuses}."
    )
    if off is not None:
        rate = _ratio(ours["emails_per_s"], off["emails_per_s"])
        per_cpu = _ratio(ours["emails_per_cpu_s"], off["emails_per_cpu_s"])
        line += f" Emails/s with tracking ÷ without: {rate}; emails per CPU-s: {per_cpu}."
    return line


def table(report: dict[str, Any]) -> str:
    ours, floor = report["ours"], report["floor"]
    off = report.get("ours_tracking_off")
    rows = [HEADER, "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|", _ours_row(ours)]
    if off is not None:
        rows.append(_ours_row(off))
    before, after = floor["before_calls_per_cpu_s"], floor["after_calls_per_cpu_s"]
    rows.append(
        _floor_row(
            "floor: raw aiobotocore SendEmail",
            floor,
            f"SDK defaults, concurrency {floor['concurrency']}, no DB/queue/rendering; "
            f"before ours {_fmt(before, 0)}, after {_fmt(after, 0)}",
        )
    )
    tuned = report.get("floor_tuned")
    if tuned is not None:
        ratio = _ratio(ours["emails_per_cpu_s"], tuned["calls_per_cpu_s"])
        rows.append(
            _floor_row(
                "the same call, our sender's path",
                tuned,
                f"DELIVERY_AWS_HTTP=direct (adapters/aws: direct, sigv4); ours ÷ this = {ratio}",
            )
        )
    rows += _peer_rows(report.get("peers", {}))
    nproc = report["machine"]["nproc"]
    lines = [*rows, "", services_line(ours, nproc)]
    if off is not None:
        lines.append(services_line(off, nproc))
    if ours.get("tracking"):
        lines += ["", tracking_line(ours, off)]
    return "\n".join(lines)


def result_line(report: dict[str, Any]) -> str:
    """``RESULT ...``: the keys of issue 5 first, in their order; tracking's after them,
    then the database's per email (issue 14)."""
    ours, floor = report["ours"], report["floor"]
    off = report.get("ours_tracking_off")
    celery = report.get("peers", {}).get("celery")
    rate = ours["emails_per_cpu_s"]
    return (
        f"RESULT emails_per_s={_plain(ours['emails_per_s'])} "
        f"ratio_to_floor={_ratio(rate, floor.get('calls_per_cpu_s'))} "
        f"ratio_to_celery={_ratio(rate, celery and celery.get('emails_per_cpu_s'))} "
        f"peak_rss_mb={_plain(ours['peak_rss_mb'])} "
        f"first_send_s={_plain(ours['first_send_s'], 2)} "
        f"events_per_s={_plain(ours.get('events_per_s'))} "
        f"emails_per_s_tracking_off={_plain(off and off['emails_per_s'])} "
        f"db_ms_per_email={_plain(ours.get('db_ms_per_email'), 3)} "
        f"db_round_trips_per_email={_plain(ours.get('db_round_trips_per_email'), 3)}"
    )
