"""A fake Anthropic API on 127.0.0.1 for tests and the benchmark.

It serves ``POST /v1/messages``, ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}`` and ``GET /v1/messages/batches/{id}/results``
with the response shapes of the real API, so the real ``anthropic`` SDK talks
to it unchanged. Every request waits ``latency`` seconds. Faults are scripted
per record id (each request for that record takes the next fault) or per
request number (1-based, over all ``/v1/messages`` requests). It records every
request and the maximum number of ``/v1/messages`` requests in flight.

A request is matched to a record through its first user message, which is the
record's prompt (describe) or description (augment), as registered with
``register``. Without a fault the server answers validly: a Chinese
description picked by a hash of the prompt, or two variants for an augment
request (recognized by "改写" in the system prompt).
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DESCRIPTIONS = [
    "雨夜霓虹街头的赛博朋克女孩",
    "清晨薄雾中的山间湖泊与木屋",
    "复古海报风格的太空探险家",
    "水墨风格的江南古镇小桥流水",
    "窗边阳光下打盹的橘色小猫",
    "极简白底上的玻璃香水瓶产品照",
    "秋日森林里骑自行车的少年",
    "蒸汽朋克风格的机械飞艇港口",
]
VARIANTS = [
    "霓虹灯照亮的潮湿街道上站着一位未来感少女",
    "薄雾笼罩的湖畔小屋，远处群山连绵",
    "一位宇航员出现在怀旧印刷海报里",
    "用水墨笔触描绘的水乡石桥与白墙黑瓦",
    "阳光洒进窗台，一只胖胖的橘猫正在熟睡",
    "纯白背景前，一只透明香水瓶的商业摄影",
    "金黄落叶铺满林间小路，男孩骑车穿行",
    "铜管与齿轮构成的飞艇停靠在繁忙码头",
]


@dataclass
class Fault:
    """One scripted misbehaviour for one request."""

    kind: str  # "status", "slow", "reset", "answer", "batch_error"
    status: int = 0
    error_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    text: str = ""

    @staticmethod
    def rate_limited(retry_after: str | None = None) -> Fault:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return Fault("status", 429, "rate_limit_error", headers)

    @staticmethod
    def overloaded() -> Fault:
        return Fault("status", 529, "overloaded_error")

    @staticmethod
    def server_error(status: int = 500) -> Fault:
        return Fault("status", status, "api_error")

    @staticmethod
    def error(status: int, error_type: str) -> Fault:
        return Fault("status", status, error_type)

    @staticmethod
    def slow(seconds: float) -> Fault:
        return Fault("slow", seconds=seconds)

    @staticmethod
    def reset() -> Fault:
        return Fault("reset")

    @staticmethod
    def answer(text: str) -> Fault:
        return Fault("answer", text=text)

    @staticmethod
    def batch_error() -> Fault:
        return Fault("batch_error")


@dataclass
class RecordedRequest:
    number: int  # 1-based over /v1/messages requests; 0 for other endpoints
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any
    record_id: str | None


@dataclass
class FakeBatch:
    id: str
    requests: list[dict[str, Any]]
    polls: int = 0
    created_at: str = "2026-01-01T00:00:00Z"


class FakeAnthropic:
    def __init__(self, latency: float = 0.0, batch_polls_to_end: int = 1):
        self.latency = latency
        self.batch_polls_to_end = batch_polls_to_end
        self.lock = threading.Lock()
        self.texts: dict[str, str] = {}  # first user message -> record id
        self.faults_by_id: dict[str, list[Fault]] = {}
        self.faults_by_number: dict[int, Fault] = {}
        self.requests: list[RecordedRequest] = []
        self.message_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.batches: dict[str, FakeBatch] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Setup ------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def register(self, records: list[dict[str, Any]]) -> None:
        """Let the server match requests to these records by prompt and description."""
        for record in records:
            self.texts[str(record["prompt"])[:3000]] = record["id"]
            if record.get("description"):
                self.texts[str(record["description"]).strip()] = record["id"]

    def script(self, record_id: str, *faults: Fault) -> None:
        self.faults_by_id.setdefault(record_id, []).extend(faults)

    def script_request(self, number: int, fault: Fault) -> None:
        self.faults_by_number[number] = fault

    # Inspection -------------------------------------------------------------

    def message_requests(self, record_id: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            rows = [request for request in self.requests if request.path == "/v1/messages"]
        return [request for request in rows if record_id is None or request.record_id == record_id]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0

    # Answers ----------------------------------------------------------------

    def record_id_for(self, body: dict[str, Any]) -> str | None:
        for message in body.get("messages", []):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = "".join(part.get("text", "") for part in content)
                return self.texts.get(str(content).strip()) or self.texts.get(str(content))
        return None

    def next_fault(self, number: int, record_id: str | None) -> Fault | None:
        with self.lock:
            if number in self.faults_by_number:
                return self.faults_by_number.pop(number)
            queue = self.faults_by_id.get(record_id or "")
            if queue:
                return queue.pop(0)
        return None

    def default_answer(self, body: dict[str, Any]) -> str:
        first = next((m for m in body.get("messages", []) if m.get("role") == "user"), {})
        content = str(first.get("content", ""))
        index = int(hashlib.sha256(content.encode()).hexdigest(), 16)
        if "改写" in _system_text(body):
            first_variant = index % len(VARIANTS)
            second_variant = (first_variant + 1) % len(VARIANTS)
            return json.dumps([VARIANTS[first_variant], VARIANTS[second_variant]], ensure_ascii=False)
        return DESCRIPTIONS[index % len(DESCRIPTIONS)]

    def message(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        characters = len(_system_text(body)) + sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        return {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "model": body.get("model", "unknown"),
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(characters // 3, 1),
                "output_tokens": max(len(text) // 2, 1),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def batch_object(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.polls >= self.batch_polls_to_end
        count = len(batch.requests)
        errored = sum(1 for request in batch.requests if self._batch_fault(request) is not None)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else count,
                "succeeded": count - errored if ended else 0,
                "errored": errored if ended else 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": batch.created_at,
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:10:00Z" if ended else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _batch_fault(self, request: dict[str, Any]) -> Fault | None:
        queue = self.faults_by_id.get(request["custom_id"]) or []
        return queue[0] if queue and queue[0].kind == "batch_error" else None

    def batch_results(self, batch: FakeBatch) -> str:
        lines = []
        for request in batch.requests:
            record_id = request["custom_id"]
            fault = self.next_fault(-1, record_id)
            if fault is not None and fault.kind == "batch_error":
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "scripted batch error"}}}
            else:
                text = fault.text if fault is not None and fault.kind == "answer" else self.default_answer(request["params"])
                result = {"type": "succeeded", "message": self.message(request["params"], text)}
            lines.append(json.dumps({"custom_id": record_id, "result": result}, ensure_ascii=False))
        return "".join(line + "\n" for line in lines)


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system", "")
    if isinstance(system, list):
        return "".join(part.get("text", "") for part in system)
    return str(system)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's
        # algorithm and delayed ACKs add about 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, OSError, ValueError):
            pass

    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _record(self, number: int, body: Any, record_id: str | None) -> None:
        with self.fake.lock:
            self.fake.requests.append(
                RecordedRequest(number, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, record_id)
            )

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:12])
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status: int, error_type: str, headers: dict[str, str] | None = None) -> None:
        body = {"type": "error", "error": {"type": error_type, "message": f"scripted {error_type}"}}
        self._send(status, body, headers)

    def do_POST(self) -> None:
        body = self._read_body()
        if self.path == "/v1/messages":
            self._messages(body)
        elif self.path == "/v1/messages/batches":
            self._record(0, body, None)
            batch = FakeBatch("msgbatch_" + uuid.uuid4().hex[:20], body["requests"])
            with self.fake.lock:
                self.fake.batches[batch.id] = batch
            time.sleep(self.fake.latency)
            self._send(200, self.fake.batch_object(batch))
        else:
            self._error(404, "not_found_error")

    def do_GET(self) -> None:
        self._record(0, None, None)
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 4 and parts[:3] == ["v1", "messages", "batches"]:
            batch = self.fake.batches.get(parts[3])
            if batch is None:
                self._error(404, "not_found_error")
                return
            if len(parts) == 4:
                with self.fake.lock:
                    batch.polls += 1
                self._send(200, self.fake.batch_object(batch))
                return
            if len(parts) == 5 and parts[4] == "results":
                self._send(200, self.fake.batch_results(batch).encode("utf-8"), content_type="application/binary")
                return
        self._error(404, "not_found_error")

    def _messages(self, body: dict[str, Any]) -> None:
        fake = self.fake
        record_id = fake.record_id_for(body)
        with fake.lock:
            fake.message_count += 1
            number = fake.message_count
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        self._record(number, body, record_id)
        try:
            time.sleep(fake.latency)
            fault = fake.next_fault(number, record_id)
            if fault is None or fault.kind == "batch_error":
                self._send(200, fake.message(body, fake.default_answer(body)))
            elif fault.kind == "status":
                self._error(fault.status, fault.error_type, fault.headers)
            elif fault.kind == "answer":
                self._send(200, fake.message(body, fault.text))
            elif fault.kind == "slow":
                time.sleep(fault.seconds)
                self._send(200, fake.message(body, fake.default_answer(body)))
            elif fault.kind == "reset":
                # SO_LINGER with a zero timeout makes close() send a TCP reset.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
        finally:
            with fake.lock:
                fake.in_flight -= 1
