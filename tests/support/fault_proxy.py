"""An HTTP proxy in front of moto that injects faults for chosen SES recipients.

Faults are injected outside the product, at the HTTP level, exactly where a real outage
would hit: the product talks to the proxy as if it were AWS. Besides fixed error answers
per recipient it can

* forward an SES send to moto and then drop the connection without answering (the email
  went out, the answer is lost): ``drop_responses`` / ``drop_fraction``;
* make every non-SES service (SQS) unreachable for a while: ``unreachable(seconds)``;
* hold the answer to chosen SQS actions after forwarding them: ``response_delay``;
* tell when each SES send arrived and was answered: ``ses_log``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

SES_SEND_PATH = "/v2/email/outbound-emails"
SES_PATH = "/v2/email"

UnreachableMode = Literal["503", "close"]

_ERRORS = {
    500: ("InternalFailure", "injected internal failure"),
    429: ("TooManyRequestsException", "Maximum sending rate exceeded."),
    400: ("MessageRejected", "injected rejection"),
}


@dataclass
class SesSend:
    """One SES send request as the proxy saw it (wall-clock times, ``time.time()``)."""

    recipients: tuple[str, ...]
    started: float
    finished: float | None = None  # when the answer (or the dropped connection) went back
    outcome: str = ""  # "sent", "fault <status>", "dropped", "upstream <status>"

    def in_flight_at(self, moment: float) -> bool:
        return self.started <= moment and (self.finished is None or moment < self.finished)


class FaultProxy:
    """``faults`` maps a recipient address to an HTTP status (500, 429, 400) that every SES
    send to it gets; ``sends`` counts the SES send calls per recipient (faulted or not)."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: dict[str, int] = {}
        # How many times each recipient's fault fires before sends go through (None: always).
        self.fault_budget: dict[str, int] = {}
        self.sends: Counter[str] = Counter()
        # Seconds every SES send waits before it is forwarded (a slow provider).
        self.send_delay = 0.0
        # Recipients whose first send reaches SES but whose answer is lost (connection
        # closed without a response); ``drop_fraction`` picks such recipients at random
        # among those seen for the first time. ``dropped`` lists them as they happen.
        self.drop_responses: set[str] = set()
        self.drop_fraction = 0.0
        self.dropped: list[str] = []
        self._dropped: set[str] = set()
        self.ses_log: list[SesSend] = []
        # Non-SES requests (SQS) by action, forwarded or refused.
        self.actions: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        # Seconds the answer to an SQS action is held after the request was forwarded.
        self.response_delay: dict[str, float] = {}
        self._unreachable_until = 0.0
        self._unreachable_mode: UnreachableMode = "503"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop serving. Requests still in the proxy's hands are not forwarded any more,
        and the SES sends under way are waited for (``timeout``): a send forwarded late
        would land in the next test's moto state (moto is reset, not restarted)."""
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + timeout
        while self.ses_in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)

    def unreachable(self, seconds: float, mode: UnreachableMode = "503") -> None:
        """For ``seconds`` from now, answer every non-SES request (SQS) with 503
        ServiceUnavailable, or close its connection without an answer (``"close"``)."""
        with self._lock:
            self._unreachable_until = time.monotonic() + seconds
            self._unreachable_mode = mode

    def is_unreachable(self) -> bool:
        return time.monotonic() < self._unreachable_until

    def ses_in_flight(self, moment: float | None = None) -> list[SesSend]:
        """SES sends under way at ``moment`` (now when None)."""
        when = time.time() if moment is None else moment
        with self._lock:
            return [send for send in self.ses_log if send.in_flight_at(when)]

    def _should_drop(self, recipients: list[str]) -> bool:
        with self._lock:
            for rcpt in recipients:
                if rcpt in self._dropped:
                    continue  # an answer is lost once per recipient: a resend goes through
                first = self.sends[rcpt] == 1
                chosen = rcpt in self.drop_responses or (
                    first and self.drop_fraction and self._rng.random() < self.drop_fraction
                )
                if chosen:
                    self.dropped.append(rcpt)
                    self._dropped.add(rcpt)
                    return True
        return False

    def _recipients(self, path: str, body: bytes) -> list[str] | None:
        """The recipients of an SES send request; None for any other request."""
        if not path.startswith(SES_SEND_PATH):
            return None
        try:
            payload: dict[str, Any] = json.loads(body or b"{}")
        except ValueError:
            return None
        recipients: list[str] = payload.get("Destination", {}).get("ToAddresses", [])
        if not recipients:  # raw content: find the To header
            raw = _decode_raw(payload.get("Content", {}).get("Raw", {}).get("Data", ""))
            known = set(self.faults) | self.drop_responses
            recipients = [r for r in known if r in raw]
        return recipients

    def _fault_for(self, path: str, body: bytes) -> int | None:
        recipients = self._recipients(path, body)
        if recipients is None:
            return None
        with self._lock:
            for rcpt in recipients:
                self.sends[rcpt] += 1
            for rcpt in recipients:
                status = self.faults.get(rcpt)
                if status is None:
                    continue
                budget = self.fault_budget.get(rcpt)
                if budget is not None:
                    if budget <= 0:
                        continue
                    self.fault_budget[rcpt] = budget - 1
                return status
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"proxy": self})


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops connection attempts under a burst (a
    # consumer starting ten sends at once): each dropped SYN stalls a send for a second
    # or more before it even reaches the proxy.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed server, a dropped answer) is part of the
        game; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Forwards to ``proxy.upstream``, injecting the faults ``proxy`` is set up with."""

    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self.path.startswith(SES_PATH):
            self._forward_other(body)
            return
        if not self.path.startswith(SES_SEND_PATH):
            self._pass_on(body)
            return
        record = SesSend(tuple(self.proxy._recipients(self.path, body) or ()), time.time())
        with self.proxy._lock:
            self.proxy.ses_log.append(record)
        try:
            record.outcome = self._forward_send(body, record)
        finally:
            record.finished = time.time()

    def _forward_send(self, body: bytes, record: SesSend) -> str:
        status = self.proxy._fault_for(self.path, body)
        if self.proxy.send_delay:
            time.sleep(self.proxy.send_delay)
        if status is not None:
            code, message = _ERRORS[status]
            data = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-ErrorType", code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return f"fault {status}"
        if self.proxy._should_drop(list(record.recipients)):
            self._upstream(body)  # SES gets the email...
            self.close_connection = True  # ...and the answer never comes back
            return "dropped"
        upstream_status = self._pass_on(body)
        return "sent" if upstream_status == 200 else f"upstream {upstream_status}"

    def _forward_other(self, body: bytes) -> None:
        action = _action(self.headers.get("X-Amz-Target"), body)
        if self.proxy.is_unreachable():
            with self.proxy._lock:
                self.proxy.refused[action] += 1
            if self.proxy._unreachable_mode == "close":
                self.close_connection = True
                return
            data = json.dumps(
                {"__type": "ServiceUnavailable", "message": "injected outage"}
            ).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("x-amzn-query-error", "ServiceUnavailable;Receiver")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with self.proxy._lock:
            self.proxy.actions[action] += 1
        answer = self._upstream(body)
        delay = self.proxy.response_delay.get(action, 0.0)
        if delay:
            time.sleep(delay)
        self._answer(*answer)

    def _pass_on(self, body: bytes) -> int:
        answer = self._upstream(body)
        self._answer(*answer)
        return answer[0]

    def _upstream(self, body: bytes) -> tuple[int, Any, bytes]:
        if self.proxy._closed.is_set():
            raise ConnectionAbortedError("the fault proxy is closed")
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        req = urllib.request.Request(
            self.proxy.upstream + self.path,
            data=body or None,
            headers=headers,
            method=self.command,
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def _answer(self, status_code: int, resp_headers: Any, data: bytes) -> None:
        self.send_response(status_code)
        for key, value in resp_headers.items():
            if key.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "server",
                "date",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


def _action(target: str | None, body: bytes) -> str:
    """The API action of a non-SES request: JSON protocol (``X-Amz-Target``) or query."""
    if target:
        return target.rsplit(".", 1)[-1]
    values = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return values.get("Action", ["?"])[0]


def _decode_raw(data: str) -> str:
    import base64

    try:
        return base64.b64decode(data).decode("utf-8", "replace")
    except ValueError:
        return data
