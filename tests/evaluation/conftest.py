"""A local chat-completions server for the judge tests: http.server on 127.0.0.1 in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# A reply is (status, body bytes, seconds to wait before answering).
Reply = tuple[int, bytes, float]


def completion(content: str) -> bytes:
    """A minimal chat-completions response body."""
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()


@dataclass
class FakeJudge:
    """Answers each request with `script.pop(0)` if scripted, else with `respond(prompt)`."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    respond: Callable[[str], str] = lambda prompt: "Rating: 4"
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    completion = staticmethod(completion)

    def next_reply(self, body: dict) -> Reply:
        with self.lock:
            self.requests.append(body)
            if self.script:
                return self.script.pop(0)
        return 200, completion(self.respond(body["messages"][-1]["content"])), 0.0


@pytest.fixture
def fake_judge() -> Iterator[FakeJudge]:
    judge = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            judge.headers.append(dict(self.headers))
            status, payload, delay = judge.next_reply(body)
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    judge.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield judge
    server.shutdown()
    server.server_close()


@pytest.fixture
def coco_dir(tmp_path):
    """A COCO 2014 annotation folder: image 1 has a person and a dog annotated, image 2 a toilet,
    image 3 (never asked for) a dog; each has one reference caption."""
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 70, "name": "toilet"}]
    instances = {
        "categories": categories,
        "annotations": [
            {"image_id": 1, "category_id": 1},
            {"image_id": 1, "category_id": 18},
            {"image_id": 2, "category_id": 70},
            {"image_id": 3, "category_id": 18},
        ],
    }
    captions = {
        "annotations": [
            {"image_id": 1, "caption": "A man throws a frisbee for his puppy."},
            {"image_id": 2, "caption": "A toilet seat next to a sink."},
            {"image_id": 3, "caption": "A cat."},
        ]
    }
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "instances_val2014.json").write_text(json.dumps(instances))
    (folder / "captions_val2014.json").write_text(json.dumps(captions))
    return folder
