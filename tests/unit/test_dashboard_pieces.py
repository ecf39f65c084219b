"""The console's pure pieces: session lifetimes and bounds, and the send history."""

from __future__ import annotations

from datetime import UTC, datetime

from delivery_server.api_tokens import ApiToken, TokenScope
from delivery_server.http.dashboard.console import template_environment
from delivery_server.http.dashboard.history import MINUTES, SendHistory, send_chart
from delivery_server.http.dashboard.sessions import SessionBook
from delivery_server.http.dashboard.static import ASSETS, static_routes

TOKEN = ApiToken(1, "ops", TokenScope.OPERATE, "ab" * 32, datetime(2026, 1, 1))


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_or_too_old_and_are_bounded() -> None:
    clock = Clock()
    book = SessionBook(idle=60, lifetime=300, max_sessions=3, clock=clock)
    session = book.open(TOKEN)
    assert book.find(session.id) is session
    assert book.find("forged") is None
    assert book.find("") is None
    for _ in range(5):  # used every 50 s: idle never reached, the lifetime is
        clock.now += 50
        assert book.find(session.id) is session
    clock.now += 51
    assert book.find(session.id) is None  # 301 s old
    idle = book.open(TOKEN)
    clock.now += 61
    assert book.find(idle.id) is None
    opened = [book.open(TOKEN) for _ in range(4)]
    assert len(book) == 3
    assert book.find(opened[0].id) is None  # the least recently used went first
    assert all(book.find(s.id) for s in opened[1:])
    assert len({s.id for s in opened}) == len({s.csrf for s in opened}) == 4


def test_csrf_and_flash() -> None:
    session = SessionBook().open(TOKEN)
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches(session.csrf + "x")
    session.flash = "done"
    assert session.take_flash() == "done"
    assert session.take_flash() is None


def test_send_history_counts_sends_per_minute_it_saw() -> None:
    clock = Clock(60 * 30_000_000.0)  # on a minute boundary
    history = SendHistory(clock=clock)
    assert all(m.sent is None for m in history.per_minute(1))
    for second in range(0, 181, 10):  # 3 minutes at 2 sends a second
        clock.now = 60 * 30_000_000.0 + second
        history.record(1, 2 * second)
    history.record(1, 300)  # a lagging row's count never takes the history back
    minutes = history.per_minute(1)
    assert len(minutes) == MINUTES
    assert [m.sent for m in minutes[-4:]] == [120, 120, 120, 0]
    assert all(m.sent is None for m in minutes[:-4])
    assert minutes[-1].start == datetime.fromtimestamp(60 * 30_000_000.0 + 180, UTC)
    chart = send_chart(minutes)
    assert (chart.peak, chart.latest, chart.seen) == (120, 120, True)
    assert [round(b.height) for b in chart.bars[-4:]] == [chart.height] * 3 + [0]
    assert history.per_minute(2)[-1].sent is None


def test_templates_and_assets_ship_in_the_package() -> None:
    environment = template_environment()
    assert environment.autoescape is True
    for name in ("base.html", "login.html", "jobs.html", "job.html", "job_block.html"):
        environment.get_template(name)
    assert {route.path for route in static_routes()} == {f"/static/{n}" for n in ASSETS}
