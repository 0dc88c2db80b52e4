"""A judge-LLM client for any OpenAI-compatible chat-completions endpoint (a local server works).

MMHal-Bench and HallusionBench grade answers with a judge model. A benchmark run must never die
halfway because the judge had a bad moment, so every failure mode ends in `None` and a counter:
transport errors and HTTP 5xx/429 are retried with exponential backoff, then counted in
`failed`; a reply that is not a chat completion, or that the benchmark cannot read, is counted
in `unparseable`. The counts go into the metrics so a reader can see how much the judge missed.

    judge = JudgeClient("http://127.0.0.1:8000/v1", model="qwen2.5-72b-instruct")
    rating = judge.ask("Rate ...", parse=parse_rating)
"""

from __future__ import annotations

import ast
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from chip.errors import ChipError, ConfigError

T = TypeVar("T")
# A chat message's content: text, or OpenAI-style parts ({"type": "text" | "image_url", ...}).
Content = str | list[dict]

# Status codes worth retrying: the server may recover (rate limit, overload, restart).
_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass
class JudgeStats:
    """What happened to the judge requests of one run."""

    requests: int = 0  # prompts sent (not counting retries)
    retries: int = 0  # extra attempts after a retryable failure
    failed: int = 0  # prompts with no usable HTTP reply after all retries
    unparseable: int = 0  # replies that were not a chat completion or that `parse` rejected

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class JudgeUnavailable(ChipError):
    """The judge endpoint gave no usable HTTP reply after every retry (raised by ``strict`` calls)."""


def _reason(error: BaseException, timeout: float) -> str:
    reason = getattr(error, "reason", error)  # urllib wraps the socket error in a URLError
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return f"{type(reason).__name__}: {reason}"


def chat_completions_url(url: str) -> str:
    """Accept a base URL (`http://host:8000/v1`) or the full `/chat/completions` endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


class JudgeClient:
    """Sends one-turn chat prompts to a chat-completions endpoint; never raises on judge failures."""

    def __init__(
        self,
        url: str,
        model: str = "gpt-4",
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> None:
        self.url = chat_completions_url(url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout  # seconds per HTTP attempt
        self.retries = retries  # extra attempts after the first
        self.backoff = backoff  # seconds before the first retry, doubled each time
        self.max_tokens = max_tokens
        self.temperature = temperature  # 0: the grade should not depend on sampling
        self.stats = JudgeStats()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        """Identity of the judge for the run's metadata (no credentials)."""
        return {"url": self.url, "model": self.model}

    def _count(self, field: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + amount)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read() if err.fp else b""

    def chat(
        self, prompt: Content, system: str | None = None, role: str = "user", strict: bool = False
    ) -> str | None:
        """The judge's reply text, or None when the request failed or the reply was malformed.

        `role` is the prompt's message role: RLHF-V's Object HalBench sends its prompt as the only,
        system, message. `prompt` may be a list of content parts (text and `image_url` parts for a
        vision judge). With `strict`, a request that gets no usable HTTP reply after every retry
        raises `JudgeUnavailable` (one line: the endpoint and the last failure) instead of
        returning None; a malformed reply still returns None.
        """
        self._count("requests")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": role, "content": prompt}
        ]
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, payload = self._post(body)
            except (OSError, http.client.HTTPException) as error:
                # URLError, connection refused/reset and socket timeouts are all OSErrors.
                last = _reason(error, self.timeout)
                continue
            last = f"HTTP {status}"
            if status in _RETRYABLE_STATUS:
                continue
            if status != 200:
                break
            try:
                content = json.loads(payload)["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                self._count("unparseable")
                return None
            if not isinstance(content, str):
                self._count("unparseable")
                return None
            return content
        self._count("failed")
        if strict:
            raise JudgeUnavailable(
                f"judge {self.url}: no usable reply after {attempt + 1} attempt(s) (last: {last})"
            )
        return None

    def ask(
        self, prompt: str, parse: Callable[[str], T | None], system: str | None = None, role: str = "user"
    ) -> T | None:
        """`parse(reply)`, or None (counted) when there is no reply or `parse` cannot read it."""
        reply = self.chat(prompt, system=system, role=role)
        if reply is None:
            return None
        value = parse(reply)
        if value is None:
            self._count("unparseable")
        return value

    def ask_many(
        self,
        prompts: Sequence[str],
        parse: Callable[[str], T | None],
        system: str | None = None,
        workers: int = 4,
        role: str = "user",
    ) -> list[T | None]:
        """`ask` for each prompt, `workers` at a time, results in prompt order."""
        if workers <= 1:
            return [self.ask(p, parse, system, role) for p in prompts]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: self.ask(p, parse, system, role), prompts))


def read_script_string(path: str | Path, variable: str, script: str, function: str | None = None) -> str:
    """The string assigned to ``variable`` in the user's copy of a reference ``script`` (a ``.py``
    file, read without running it; with ``function``, inside that top-level function only), or the
    whole text of any other file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: judge prompt file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    scope: ast.AST = ast.parse(text, filename=str(path))
    if function is not None:
        bodies = [
            n for n in ast.iter_child_nodes(scope) if isinstance(n, ast.FunctionDef) and n.name == function
        ]
        if not bodies:
            raise ConfigError(f"{path}: no function `{function}` (expected {script})")
        scope = bodies[0]
    found = [
        node.value.value
        for node in ast.walk(scope)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    where = f"`{variable}` in `{function}`" if function else f"`{variable}`"
    if not found:
        raise ConfigError(f"{path}: no string assigned to {where} (expected {script})")
    return found[-1]
