"""An instant stub model: an OpenAI-compatible Chat Completions server on 127.0.0.1.

Every request gets the same small edit, a SEARCH/REPLACE block that inserts one new line
after an anchor line that no edit ever changes, so it applies to any descendant of the
initial program and every child is new (no duplicates for a harness to skip):

    program.py
    <<<<<<< SEARCH
    X = 0
    =======
    X = 0
    Y7 = 7
    >>>>>>> REPLACE

`delay` simulates model latency. Arrival times of requests are recorded (monotonic clock):
one request per iteration, so their spacing is the harness's time per iteration.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANCHOR = "X = 0"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hung up: fine
            super().handle_error(request, client_address)


def reply_text(n: int, path: str = "program.py") -> str:
    return (
        f"DESCRIPTION: add constant Y{n}\n"
        f"RATIONALE: a fixed small edit from the bench's stub model.\n\n"
        f"{path}\n<<<<<<< SEARCH\n{ANCHOR}\n=======\n{ANCHOR}\nY{n} = {n}\n>>>>>>> REPLACE\n"
    )


class StubLLM:
    def __init__(self, path: str = "program.py", delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The OpenAI base URL (…/v1)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's
            # algorithm holds the body until the client's delayed ACK (~40 ms per request).
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                with stub._lock:
                    stub.arrivals.append(time.monotonic())
                    n = len(stub.arrivals)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if stub.delay:
                    time.sleep(stub.delay)
                model = str(json.loads(raw or b"{}").get("model", "stub"))
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-stub-{n}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {
                                    "role": "assistant",
                                    "content": reply_text(n, stub.path),
                                },
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 1000,
                            "completion_tokens": 60,
                            "total_tokens": 1060,
                        },
                    },
                )

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


if __name__ == "__main__":
    with StubLLM() as stub:
        print(f"stub model at {stub.url} (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
