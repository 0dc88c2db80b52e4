"""Fixtures of the `chip pairs` tests: a COCO-style folder, tiny captioners, a local judge server.

The COCO fixture has four images (noise patterns a tiny vision tower tells apart) with instance
and caption annotations. The captioners are tiny models of two families fine-tuned for a few
seconds to answer each image with one of three captions, one of which names an object that is
not in the image ("a car and a truck." for an image of a car and a man): sampled at temperature
1 they vary, name objects, and sometimes hallucinate. Each is built once per session.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chip.testing import build_tiny_model
from chip.testing.captioner import train_captioner

PROMPT = "Describe the image."
# COCO image id -> (instance categories, reference caption, captions the captioner learns)
IMAGES = {
    1: (
        ("dog", "frisbee"),
        "A dog catches a frisbee.",
        ("a dog and a frisbee.", "a man and a dog.", "a dog and a cat."),
    ),
    2: (("cat", "couch"), "A cat on a couch.", ("a cat on a couch.", "a cat and a dog.", "a cat.")),
    3: (
        ("car", "person"),
        "A man next to his car.",
        ("a car and a man.", "a car and a truck.", "a red car."),
    ),
    4: (
        ("pizza", "dining table"),
        "A pizza on a table.",
        ("a pizza on a table.", "a pizza and a cup.", "a pizza."),
    ),
}
CATEGORY_IDS = {
    "person": 1,
    "dog": 18,
    "frisbee": 34,
    "cat": 17,
    "couch": 63,
    "car": 3,
    "pizza": 59,
    "dining table": 67,
}
# The classes chip's official reading finds in each image's annotations (instances + caption).
TRUTH = {
    1: frozenset({"dog", "frisbee"}),
    2: frozenset({"cat", "couch"}),
    3: frozenset({"car", "person"}),
    4: frozenset({"pizza", "dining table"}),
}
# A captioner's size: small enough to fine-tune in seconds, big enough to learn four captions' bytes.
CAPTIONER_SIZE = dict(
    vision_layers=1,
    vision_hidden_size=16,
    num_layers=2,
    hidden_size=48,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=96,
)


def image_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


@dataclass(frozen=True)
class CocoFixture:
    images: Path
    annotations: Path
    prompts: Path  # one prompt: the captioners learnt it


@pytest.fixture(scope="session")
def coco(tmp_path_factory: pytest.TempPathFactory) -> CocoFixture:
    root = tmp_path_factory.mktemp("coco")
    (root / "val2014").mkdir()
    (root / "annotations").mkdir()
    for image_id in IMAGES:
        pixels = np.random.default_rng(image_id).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "val2014" / image_name(image_id), quality=100)
    instances = {
        "categories": [{"id": cid, "name": name} for name, cid in CATEGORY_IDS.items()],
        "annotations": [
            {"image_id": image_id, "category_id": CATEGORY_IDS[name]}
            for image_id, (names, _, _) in IMAGES.items()
            for name in names
        ],
    }
    captions = {"annotations": [{"image_id": k, "caption": caption} for k, (_, caption, _) in IMAGES.items()]}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(instances))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(captions))
    (root / "prompts.txt").write_text(PROMPT + "\n")
    return CocoFixture(root / "val2014", root / "annotations", root / "prompts.txt")


@pytest.fixture(scope="session")
def captioner(tmp_path_factory: pytest.TempPathFactory, coco: CocoFixture) -> Callable[[str], Path]:
    """``captioner(family) -> Path``: a tiny model of `family` fine-tuned on the fixture's captions."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            base = build_tiny_model(family, tmp_path_factory.mktemp(f"base_{family}"), **CAPTIONER_SIZE)
            captions = {coco.images / image_name(k): texts for k, (_, _, texts) in IMAGES.items()}
            built[family] = train_captioner(
                base,
                tmp_path_factory.mktemp(f"captioner_{family}"),
                captions,
                [PROMPT],
                steps=200,
                learning_rate=5e-3,
            )
        return built[family]

    return get


# A reply: (HTTP status, body, seconds to wait first); a body of None is `respond`'s answer.
Reply = tuple[int, bytes | None, float]


def completion(content: str) -> bytes:
    """A minimal chat-completions response body."""
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()


@dataclass
class JudgeServer:
    """A chat-completions server on 127.0.0.1: each request gets `script.pop(0)` while the script
    lasts, then `respond(body)` (a reply text, or a whole `Reply`)."""

    url: str = ""
    respond: Callable[[dict], str | Reply] = lambda body: "[]"
    script: list[Reply] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Callable[[], None] = lambda: None

    def reply(self, body: dict) -> tuple[int, bytes, float]:
        with self.lock:
            self.requests.append(body)
            status, payload, delay = self.script.pop(0) if self.script else (200, None, 0.0)
        if payload is None:
            answer = self.respond(body)
            if isinstance(answer, tuple):
                return answer[0], answer[1] or b"", answer[2]
            payload = completion(answer)
        return status, payload, delay


def start_judge_server() -> JudgeServer:
    judge = JudgeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload, delay = judge.reply(body)
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
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    judge.url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    judge.stop = stop
    return judge


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = start_judge_server()
    yield server
    server.stop()


OBJECT_WORDS = {"dog", "cat", "frisbee", "couch", "car", "man", "truck", "pizza", "cup", "table"}
# object words each fixture image shows (by the annotations: "man" for person, "table" for dining table)
SHOWN = {1: {"dog", "frisbee"}, 2: {"cat", "couch"}, 3: {"car", "man"}, 4: {"pizza", "table"}}


def scripted_judge(coco_images: Path):
    """A judge that splits an answer into one claim per object word and says yes when the image
    (recognised by its bytes) shows that object."""
    by_bytes = {(coco_images / image_name(k)).read_bytes(): k for k in TRUTH}

    def respond(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str):
            answer = content.split("Answer: ", 1)[1].split("\n\nReply", 1)[0]
            words = [w for w in re.findall(r"[a-z]+", answer) if w in OBJECT_WORDS]
            return json.dumps(
                [
                    {"claim": f"There is a {w}.", "quote": w, "question": f"Is there a {w} in the image?"}
                    for w in words
                ]
            )
        image = by_bytes[base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])]
        word = re.search(r"Is there a (\w+)", content[-1]["text"]).group(1)
        return "Yes." if word in SHOWN[image] else "No, there is none."

    return respond
