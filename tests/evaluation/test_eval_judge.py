"""The judge client against a local chat-completions server: replies, retries, timeouts, garbage."""

from __future__ import annotations

import socket

from chip.evaluation.judge import JudgeClient, chat_completions_url
from chip.evaluation.mmhal import parse_rating


def client(url: str, **kwargs) -> JudgeClient:
    return JudgeClient(url, **{"model": "judge-x", "retries": 2, "backoff": 0.0, "timeout": 5.0, **kwargs})


def test_url_forms() -> None:
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_reply_and_request_shape(fake_judge) -> None:
    fake_judge.respond = lambda prompt: f"echo: {prompt}"
    judge = client(fake_judge.url, api_key="secret")
    assert judge.chat("hello", system="be strict") == "echo: hello"
    body = fake_judge.requests[0]
    assert body["model"] == "judge-x" and body["temperature"] == 0.0
    assert body["messages"] == [
        {"role": "system", "content": "be strict"},
        {"role": "user", "content": "hello"},
    ]
    assert fake_judge.headers[0]["Authorization"] == "Bearer secret"
    assert judge.stats.as_dict() == {"requests": 1, "retries": 0, "failed": 0, "unparseable": 0}


def test_http_500_is_retried_then_succeeds(fake_judge) -> None:
    fake_judge.script = [(500, b"oops", 0.0), (503, b"", 0.0)]
    judge = client(fake_judge.url)
    assert judge.chat("x") == "Rating: 4"
    assert (judge.stats.retries, judge.stats.failed, len(fake_judge.requests)) == (2, 0, 3)


def test_persistent_500_is_counted_not_raised(fake_judge) -> None:
    fake_judge.script = [(500, b"oops", 0.0)] * 3
    judge = client(fake_judge.url)
    assert judge.chat("x") is None
    assert (judge.stats.retries, judge.stats.failed) == (2, 1)


def test_client_error_is_not_retried(fake_judge) -> None:
    fake_judge.script = [(400, b"bad request", 0.0)]
    judge = client(fake_judge.url)
    assert judge.chat("x") is None
    assert (judge.stats.retries, judge.stats.failed, len(fake_judge.requests)) == (0, 1, 1)


def test_timeout_is_retried_then_counted(fake_judge) -> None:
    fake_judge.script = [(200, fake_judge.completion("late"), 1.0), (200, fake_judge.completion("late"), 1.0)]
    judge = client(fake_judge.url, timeout=0.2, retries=1)
    assert judge.chat("x") is None
    assert (judge.stats.retries, judge.stats.failed) == (1, 1)


def test_timeout_then_recovery(fake_judge) -> None:
    fake_judge.script = [(200, fake_judge.completion("late"), 1.0)]
    judge = client(fake_judge.url, timeout=0.2, retries=1)
    assert judge.chat("x") == "Rating: 4"


def test_unparseable_bodies_are_counted(fake_judge) -> None:
    fake_judge.script = [
        (200, b"<html>not json</html>", 0.0),
        (200, b'{"choices": []}', 0.0),
        (200, b'{"choices": [{"message": {"content": null}}]}', 0.0),
    ]
    judge = client(fake_judge.url)
    assert [judge.chat("x") for _ in range(3)] == [None, None, None]
    assert (judge.stats.unparseable, judge.stats.failed, judge.stats.retries) == (3, 0, 0)


def test_reply_the_benchmark_cannot_read_is_counted(fake_judge) -> None:
    fake_judge.respond = lambda prompt: "I would rather not rate this."
    judge = client(fake_judge.url)
    assert judge.ask("x", parse_rating) is None
    assert judge.stats.unparseable == 1


def test_connection_refused_is_counted() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = client(f"http://127.0.0.1:{port}/v1", retries=1)
    assert judge.chat("x") is None
    assert (judge.stats.failed, judge.stats.retries) == (1, 1)


def test_ask_many_keeps_prompt_order(fake_judge) -> None:
    fake_judge.respond = lambda prompt: f"Rating: {prompt}"
    judge = client(fake_judge.url)
    prompts = [str(i % 10) for i in range(20)]
    # ratings run 0-6, so the replies for 7, 8 and 9 are unreadable
    assert judge.ask_many(prompts, parse_rating, workers=4) == [
        i % 10 if i % 10 <= 6 else None for i in range(20)
    ]
    assert judge.stats.unparseable == 6 and judge.stats.requests == 20
