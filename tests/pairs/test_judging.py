"""The judge annotator against a real HTTP server on 127.0.0.1: scores, retries, bad replies, outages."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from chip.data import ImageRef
from chip.errors import ConfigError
from chip.evaluation.judge import JudgeClient, JudgeUnavailable
from chip.pairs.annotators import Annotation
from chip.pairs.judging import (
    JudgeAnnotator,
    load_judge_prompts,
    parse_claims,
    parse_verdict,
    quote_span,
)
from chip.pairs.sampling import Sample
from chip.pairs.sources import PromptItem
from tests.pairs.conftest import PROMPT, TRUTH, image_name, scripted_judge, start_judge_server


def items(coco) -> dict[str, PromptItem]:
    return {
        f"i{k}": PromptItem(f"i{k}", PROMPT, (ImageRef(path=coco.images / image_name(k)),), (image_name(k),))
        for k in TRUTH
    }


def samples() -> list[Sample]:
    texts = [("i1", "a dog and a cat."), ("i3", "a car and a truck."), ("i2", "a cat.")]
    return [Sample(f"{key}#0", key, 0, text, 5, True) for key, text in texts]


def annotator(url: str, path: Path, workers: int = 1, **client) -> JudgeAnnotator:
    options = {"model": "judge-x", "retries": 2, "backoff": 0.01, "timeout": 5.0, **client}
    return JudgeAnnotator(JudgeClient(url, **options), load_judge_prompts(), path, workers=workers)


# By hand: "a dog and a cat." on image 1 (dog, frisbee): claims dog (true), cat (false, chars 12-15).
# "a car and a truck." on image 3 (car, man): car true, truck false (12-17). "a cat." on image 2: true.
EXPECTED = [
    Annotation(1, 1, ((12, 15),), ("There is a cat.",)),
    Annotation(1, 1, ((12, 17),), ("There is a truck.",)),
    Annotation(0, 1, (), ()),
]


def test_scores_spans_requests_and_resume(judge_server, coco, tmp_path) -> None:
    judge_server.respond = scripted_judge(coco.images)
    path = tmp_path / "judgments.ndjson"
    assert annotator(judge_server.url, path, workers=3).annotate(samples(), items(coco)) == EXPECTED
    assert len(path.read_text().splitlines()) == 3 and len(judge_server.requests) == 3 + 5
    claims = [r for r in judge_server.requests if isinstance(r["messages"][-1]["content"], str)]
    assert any("Question: Describe the image." in r["messages"][-1]["content"] for r in claims)
    verify = next(r for r in judge_server.requests if not isinstance(r["messages"][-1]["content"], str))
    image_part, text_part = verify["messages"][-1]["content"]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert text_part["text"].startswith("Is there a ") and text_part["text"].endswith(
        "Answer with yes or no only.\n"
    )
    assert verify["model"] == "judge-x" and verify["temperature"] == 0.0
    # A restart asks nothing again.
    assert annotator(judge_server.url, path).annotate(samples(), items(coco)) == EXPECTED
    assert len(judge_server.requests) == 8


def test_500_and_timeout_are_retried(judge_server, coco, tmp_path) -> None:
    """Claims request: HTTP 500, then a reply too late (timed out), then answered; the result is the
    clean one and the client counts 2 retries."""
    judge_server.respond = scripted_judge(coco.images)
    judge_server.script = [(500, b"oops", 0.0), (200, None, 1.0)]
    judge = annotator(judge_server.url, tmp_path / "j.ndjson", timeout=0.3)
    assert judge.annotate(samples()[:1], items(coco)) == EXPECTED[:1]
    stats = judge.client.stats
    assert (stats.retries, stats.failed, stats.requests, len(judge_server.requests)) == (2, 0, 3, 5)


def test_unreadable_replies_leave_the_sample_unusable(judge_server, coco, tmp_path) -> None:
    """A reply without a JSON list, a body that is not JSON at all, a verdict that is neither yes nor
    no: each sample is kept as unusable (not asked again), the rest judged."""
    scripted = scripted_judge(coco.images)

    def respond(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str) and "a dog and a cat." in content:
            return "Sure! The answer is fine."
        if not isinstance(content, str) and "cat" in content[-1]["text"]:
            return "Maybe."
        return scripted(body)

    judge_server.respond = respond
    judge_server.script = [(200, None, 0.0), (200, b"{not json", 0.0)]  # the second sample's claims
    path = tmp_path / "j.ndjson"
    found = annotator(judge_server.url, path).annotate(samples(), items(coco))
    assert [a.problem for a in found] == [
        "judge reply unreadable (claims)",
        "judge reply unreadable (claims)",
        "judge reply unreadable (verdict)",
    ]
    asked = len(judge_server.requests)
    assert annotator(judge_server.url, path).annotate(samples(), items(coco)) == found
    assert len(judge_server.requests) == asked


def test_endpoint_that_never_comes_up(coco, tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "j.ndjson"
    with pytest.raises(JudgeUnavailable) as caught:
        annotator(f"http://127.0.0.1:{port}/v1", path, retries=1).annotate(samples(), items(coco))
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and "connection refused" in message
    assert "0 of 3 samples judged so far are kept" in message and "run the same command again" in message


def test_endpoint_that_goes_down_loses_nothing(coco, tmp_path) -> None:
    """The endpoint answers 3 requests (the first sample: claims + 2 verdicts), then 503 for good:
    a one-line error, one judgment kept; a restart against a new server judges only the other two,
    and the judgments equal an uninterrupted run's."""
    reference = start_judge_server()
    reference.respond = scripted_judge(coco.images)
    expected = annotator(reference.url, tmp_path / "reference.ndjson").annotate(samples(), items(coco))
    reference.stop()

    failing = start_judge_server()
    scripted = scripted_judge(coco.images)
    failing.respond = lambda body: scripted(body) if len(failing.requests) <= 3 else (503, b"", 0.0)
    path = tmp_path / "j.ndjson"
    with pytest.raises(JudgeUnavailable, match=r"HTTP 503\); 1 of 3 samples judged so far are kept"):
        annotator(failing.url, path).annotate(samples(), items(coco))
    failing.stop()
    assert [json.loads(line)["unit"] for line in path.read_text().splitlines()] == ["i1#0"]

    recovered = start_judge_server()
    recovered.respond = scripted_judge(coco.images)
    assert annotator(recovered.url, path).annotate(samples(), items(coco)) == expected == EXPECTED
    assert len(recovered.requests) == 2 + 3
    recovered.stop()


def test_prompts_file(judge_server, coco, tmp_path) -> None:
    custom = tmp_path / "prompts.yaml"
    custom.write_text('claims: "List claims of: {response}"\nverify: "Q: {question}"\n')
    judge_server.respond = lambda body: "[]"
    judge = JudgeAnnotator(
        JudgeClient(judge_server.url, retries=0), load_judge_prompts(custom), tmp_path / "j"
    )
    assert judge.annotate(samples()[:1], items(coco)) == [Annotation(0, 0, (), ())]
    assert judge_server.requests[0]["messages"][-1]["content"] == "List claims of: a dog and a cat."
    # Judgments made with other prompts are not mixed in.
    with pytest.raises(ConfigError, match="other prompts"):
        annotator(judge_server.url, tmp_path / "j").annotate(samples(), items(coco))
    custom.write_text('claims: "no placeholder"\nverify: "{question}"\n')
    with pytest.raises(ConfigError, match=r"must contain \{response\}"):
        load_judge_prompts(custom)


def test_parse_claims() -> None:
    fenced = '```json\n[{"claim": "A dog.", "quote": "a dog", "question": "Is there a dog?"}]\n```'
    assert parse_claims(fenced) == [{"claim": "A dog.", "quote": "a dog", "question": "Is there a dog?"}]
    assert parse_claims('Here: [{"question": "Q?"}] done') == [{"claim": "", "quote": "", "question": "Q?"}]
    assert parse_claims("[]") == []
    assert parse_claims("no list") is None
    assert parse_claims('[{"claim": "no question"}]') is None
    assert parse_claims('{"question": "Q?"}') is None


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes.", True),
        ("no", False),
        ("**No**, there is none.", False),
        ("YES", True),
        ("Maybe", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


def test_quote_span() -> None:
    text = "A man holds a Red  umbrella."
    assert quote_span(text, "holds") == (6, 11)
    assert quote_span(text, "red umbrella") == (14, 27)  # case and double space ignored
    assert quote_span(text, "green umbrella") is None
    assert quote_span(text, "  ") is None
