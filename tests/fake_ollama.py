"""A local stand-in for an Ollama server, for the Ollama backend's tests.

It serves ``POST /api/generate`` in Ollama's wire format: NDJSON messages
with ``response`` text and a final message with ``done``, ``done_reason`` and
the token counts. The body is sent with chunked transfer encoding in small,
flushed pieces whose boundaries fall inside lines and inside multi-byte UTF-8
characters, and some pieces hold several lines. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeOllamaScript:
    """The replies of the fake server."""

    models: set[str] = field(default_factory=lambda: {"nbp-test"})
    pieces: list[str] = field(default_factory=lambda: ["A neon ", "street, ", "霓虹", "街头", " rain ", "雨夜", "."])
    done_reason: str = "stop"
    # Byte sizes of the network writes, used in turn; chosen so that writes end
    # in the middle of lines and of 3-byte Chinese characters.
    write_sizes: tuple[int, ...] = (7, 1, 2, 40, 5, 300, 3)
    # Sent as a message with an "error" key after this many pieces, when set.
    error_after: int | None = None
    requests: list[dict] = field(default_factory=list)


class FakeOllama:
    """Run ``FakeOllamaScript`` on an HTTP server at 127.0.0.1 on a free port, in a thread."""

    def __init__(self, script: FakeOllamaScript | None = None):
        self.script = script or FakeOllamaScript()
        handler = type("Handler", (_Handler,), {"script": self.script})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeOllama":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def ndjson_body(script: FakeOllamaScript, model: str) -> bytes:
    lines = []
    for index, piece in enumerate(script.pieces):
        if script.error_after is not None and index == script.error_after:
            lines.append({"error": "an error was encountered while running the model"})
            break
        lines.append({"model": model, "created_at": "2025-01-01T00:00:00Z", "response": piece, "done": False})
    else:
        lines.append(
            {
                "model": model,
                "created_at": "2025-01-01T00:00:01Z",
                "response": "",
                "done": True,
                "done_reason": script.done_reason,
                "total_duration": 1_500_000_000,
                "load_duration": 100_000_000,
                "prompt_eval_count": 180,
                "prompt_eval_duration": 200_000_000,
                "eval_count": len(script.pieces),
                "eval_duration": 600_000_000,
            }
        )
    # ensure_ascii=False puts the UTF-8 bytes of the Chinese text on the wire, as Ollama does.
    return b"".join(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" for line in lines)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: FakeOllamaScript

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.script.requests.append(request)
        if self.path != "/api/generate":
            self._send_json(404, {"error": "404 page not found"})
            return
        model = request.get("model", "")
        if model not in self.script.models:
            self._send_json(404, {"error": f"model '{model}' not found"})
            return

        body = ndjson_body(self.script, model)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        position = 0
        turn = 0
        while position < len(body):
            size = self.script.write_sizes[turn % len(self.script.write_sizes)]
            piece = body[position : position + size]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            time.sleep(0.002)  # so the client reads the pieces separately
            position += size
            turn += 1
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
