"""An HTTP proxy in front of moto that injects faults for chosen SES recipients.

Faults are injected outside the product, at the HTTP level, exactly where a real outage
would hit: the product talks to the proxy as if it were AWS.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SES_SEND_PATH = "/v2/email/outbound-emails"

_ERRORS = {
    500: ("InternalFailure", "injected internal failure"),
    429: ("TooManyRequestsException", "Maximum sending rate exceeded."),
    400: ("MessageRejected", "injected rejection"),
}


class FaultProxy:
    """``faults`` maps a recipient address to an HTTP status (500, 429, 400) that every SES
    send to it gets; ``sends`` counts the SES send calls per recipient (faulted or not)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: dict[str, int] = {}
        # How many times each recipient's fault fires before sends go through (None: always).
        self.fault_budget: dict[str, int] = {}
        self.sends: Counter[str] = Counter()
        # Seconds every SES send waits before it is forwarded (a slow provider).
        self.send_delay = 0.0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault_for(self, path: str, body: bytes) -> int | None:
        if not path.startswith(SES_SEND_PATH):
            return None
        try:
            payload: dict[str, Any] = json.loads(body or b"{}")
        except ValueError:
            return None
        recipients = payload.get("Destination", {}).get("ToAddresses", [])
        if not recipients:  # raw content: find the To header
            raw = payload.get("Content", {}).get("Raw", {}).get("Data", "")
            recipients = [r for r in self.faults if r in _decode_raw(raw)]
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
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = proxy._fault_for(self.path, body)
                if proxy.send_delay and self.path.startswith(SES_SEND_PATH):
                    time.sleep(proxy.send_delay)
                if status is not None:
                    code, message = _ERRORS[status]
                    data = json.dumps({"message": message}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("x-amzn-ErrorType", code)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                req = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=body or None,
                    headers=headers,
                    method=self.command,
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status_code, resp_headers, data = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as err:
                    status_code, resp_headers, data = err.code, err.headers, err.read()
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

        return Handler


def _decode_raw(data: str) -> str:
    import base64

    try:
        return base64.b64decode(data).decode("utf-8", "replace")
    except ValueError:
        return data
