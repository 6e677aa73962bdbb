"""A tiny OpenAI-compatible HTTP server for tests: chat completions, plain and SSE streaming.

Real instrumentations wrap the real ``openai`` client; pointing that client at this server lets the
tests capture exactly the spans each instrumentation emits, with no network.  Usage carries cached
and reasoning token details so the cost of every token type is exercised.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST_MODEL = "gpt-4o"
FAILING_MODEL = "gpt-4o-failing"  # requests for it get a 500, to see how each dialect reports errors
RESPONSE_MODEL = "gpt-4o-2024-08-06"
ANSWER_PARTS = ["The capital ", "of France ", "is Paris."]
ANSWER = "".join(ANSWER_PARTS)
USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}
FIRST_CHUNK_DELAY = 0.05  # seconds before the first streamed chunk: a measurable time to first token
CHUNK_INTERVAL = 0.02


TOOL_CALL_ID = "call_test1"


def _completion(body: dict) -> dict:
    """The answer; a request offering tools whose last message is the user's gets a call of the
    first tool (``{"city": "Paris"}``), as a model deciding to use it would."""
    messages = body.get("messages") or [{}]
    tools = body.get("tools") or []
    if tools and messages[-1].get("role") == "user":
        name = (tools[0].get("function") or {}).get("name", "tool")
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": TOOL_CALL_ID, "type": "function",
             "function": {"name": name, "arguments": json.dumps({"city": "Paris"})}}]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": ANSWER, "refusal": None}, "stop"
    return {
        "id": "chatcmpl-test1", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model") if body.get("model") != REQUEST_MODEL else RESPONSE_MODEL,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None, "message": message}],
        "usage": USAGE,
    }


def _chunks(include_usage: bool) -> list[dict]:
    base = {"id": "chatcmpl-test2", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": RESPONSE_MODEL, "system_fingerprint": "fp_test"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None, "logprobs": None}]}]
    for part in ANSWER_PARTS:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": part},
                                            "finish_reason": None, "logprobs": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": USAGE})
    return chunks


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append(body)  # type: ignore[attr-defined]
        self.server.headers.append(dict(self.headers))  # type: ignore[attr-defined]
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
        elif body.get("model") == FAILING_MODEL:
            self._send(500, {"error": {"message": "the model is overloaded", "type": "server_error"}})
        elif body.get("stream"):
            self._stream(bool((body.get("stream_options") or {}).get("include_usage")))
        else:
            self._send(200, _completion(body))

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        time.sleep(FIRST_CHUNK_DELAY)
        for chunk in _chunks(include_usage):
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(CHUNK_INTERVAL)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class FakeOpenAI:
    """Context manager: serves on 127.0.0.1 on a free port; ``base_url`` is what the client needs."""

    def __enter__(self) -> "FakeOpenAI":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.requests = []  # type: ignore[attr-defined]
        self.server.headers = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict]:
        return self.server.requests  # type: ignore[attr-defined]

    @property
    def headers(self) -> list[dict]:
        """The HTTP headers of each request (tests check what credentials were sent)."""
        return self.server.headers  # type: ignore[attr-defined]

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
