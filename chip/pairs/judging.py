"""The judge annotator: RLAIF-V's divide and conquer, with any OpenAI-compatible chat endpoint.

RLAIF-V (Yu et al., 2024) scores a response without reference annotations:

    divide:   split the response into atomic claims, each turned into a yes/no question
    conquer:  ask a vision-language model each question about the image
    combine:  score = -(claims judged false)

Here both steps go to one served model (vLLM, TGI, Ollama, llama.cpp's server: anything that
speaks `/v1/chat/completions`): the claims request is text only and asks for a JSON list of
{claim, quote, question}; each verification request carries the image(s) as data URLs. A claim
judged false is a hallucination; its `quote` (the response's own words) marks it in the response.
The two prompts live in `data/judge_prompts.yaml`, replaceable with `--judge_prompts FILE`.

Nothing is lost when the endpoint fails: timeouts, refused connections and HTTP 5xx/429 are retried
with back-off by `chip.evaluation.judge.JudgeClient`; when it stays down, the judged samples so far
are already in `judgments.ndjson` (one line per sample, appended and fsynced as each finishes) and
the error is one line; a restart judges only the rest. A reply that is not what the prompt asked
for (no JSON list, no yes/no) leaves the sample unusable, counted in the report as such.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from chip.data import ImageRef
from chip.errors import ConfigError
from chip.evaluation.generate import read_answered
from chip.evaluation.judge import JudgeClient, JudgeUnavailable
from chip.files import append_text
from chip.pairs.annotators import Annotation
from chip.pairs.sampling import Sample
from chip.pairs.sources import PromptItem

PROMPTS_FILE = Path(__file__).with_name("data") / "judge_prompts.yaml"
_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgePrompts:
    """The claims template ({prompt}, {response}) and the verification template ({question}, {claim})."""

    claims: str
    verify: str

    def digest(self) -> str:
        """A short hash of both templates: judgments made with other prompts are not mixed in."""
        return hashlib.blake2b(f"{self.claims}\x00{self.verify}".encode(), digest_size=6).hexdigest()


def load_judge_prompts(path: str | Path | None = None) -> JudgePrompts:
    """The templates of a YAML file with `claims` and `verify` (default: the one chip ships)."""
    path = Path(path) if path is not None else PROMPTS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: judge prompts file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    needs = {"claims": ("{response}",), "verify": ("{question}",)}
    for key, placeholders in needs.items():
        if not isinstance(data, dict) or not isinstance(data.get(key), str):
            raise ConfigError(f"{path}: field {key!r}: missing (a template string)")
        for placeholder in placeholders:
            if placeholder not in data[key]:
                raise ConfigError(f"{path}: field {key!r}: the template must contain {placeholder}")
    return JudgePrompts(data["claims"], data["verify"])


def parse_claims(reply: str) -> list[dict[str, str]] | None:
    """The JSON list of claims in a reply (code fences and text around it allowed); None if unreadable.

    Each claim needs a string "question"; "claim" and "quote" default to "" when absent.
    """
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(reply[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    claims = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str):
            return None
        claims.append({key: str(entry.get(key) or "") for key in ("claim", "quote", "question")})
    return claims


def parse_verdict(reply: str) -> bool | None:
    """True for a reply starting with "yes", False for "no" (any case, after punctuation), else None."""
    match = _VERDICT.match(reply)
    return None if match is None else match.group(1).lower() == "yes"


def quote_span(response: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` is in `response`: verbatim, else ignoring case and runs of white space; else None."""
    words = quote.split()
    if not words:
        return None
    at = response.find(quote.strip())
    if at >= 0:
        return at, at + len(quote.strip())
    match = re.search(r"\s+".join(map(re.escape, words)), response, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def image_part(ref: ImageRef) -> dict[str, Any]:
    """An OpenAI `image_url` content part holding the image file's own bytes as a data URL."""
    data = ref.data if ref.data is not None else Path(str(ref.path)).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        mime = Image.MIME.get(image.format or "", "image/png")
    return {
        "type": "image_url",
        "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"},
    }


def prompt_text(prompt: str | list[dict]) -> str:
    """The text of a prompt; for chat messages, the user turns' text parts."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(
        part["text"]
        for message in prompt
        if message["role"] == "user"
        for part in message["content"]
        if part.get("type") == "text"
    )


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for start, end in sorted(set(spans)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


def annotation_of(row: Mapping[str, Any], response: str) -> Annotation:
    """The annotation a stored judgment gives its response."""
    if row.get("problem"):
        return Annotation(0, 0, None, (), row["problem"])
    false = [claim for claim in row["claims"] if claim["true"] is False]
    spans = [quote_span(response, claim["quote"]) for claim in false]
    placed = None if any(span is None for span in spans) else _merged([s for s in spans if s is not None])
    coverage = sum(claim["true"] is True for claim in row["claims"])
    return Annotation(
        len(false), coverage, placed, tuple(claim["claim"] or claim["question"] for claim in false)
    )


class JudgeAnnotator:
    """Claims split and checked by a served vision-language model; judgments kept in `path`."""

    name = "judge"

    def __init__(
        self, client: JudgeClient, prompts: JudgePrompts, path: str | Path, workers: int = 4
    ) -> None:
        self.client = client
        self.prompts = prompts
        self.path = Path(path)
        self.workers = max(1, workers)
        self._identity = {"model": client.model, "prompts": prompts.digest()}

    def describe(self) -> dict[str, Any]:
        return {"annotator": self.name, **self.client.describe(), **self.client.stats.as_dict()}

    def judge_sample(self, sample: Sample, item: PromptItem) -> dict[str, Any]:
        """One sample's stored judgment; raises `JudgeUnavailable` when the endpoint stays down."""
        row: dict[str, Any] = {"unit": sample.unit, "claims": [], "problem": None, "judge": self._identity}
        request = self.prompts.claims.replace("{prompt}", prompt_text(item.prompt))
        reply = self.client.chat(request.replace("{response}", sample.response), strict=True)
        claims = parse_claims(reply) if reply is not None else None
        if claims is None:
            return {**row, "problem": "judge reply unreadable (claims)"}
        images = [image_part(ref) for ref in item.images]
        for claim in claims:
            text = self.prompts.verify.replace("{question}", claim["question"]).replace(
                "{claim}", claim["claim"]
            )
            verdict = self.client.chat([*images, {"type": "text", "text": text}], strict=True)
            claim["true"] = parse_verdict(verdict) if verdict is not None else None
        unreadable = any(claim["true"] is None for claim in claims)
        return {
            **row,
            "claims": claims,
            "problem": "judge reply unreadable (verdict)" if unreadable else None,
        }

    def _stored(self) -> dict[str, dict[str, Any]]:
        done, first = read_answered(self.path, "unit")  # also cuts a line torn by a kill
        if first is not None and first.get("judge") != self._identity:
            raise ConfigError(
                f"{self.path} holds judgments of another judge model or other prompts ({first.get('judge')}); "
                "write to a new --output folder"
            )
        if not done:
            return {}
        rows = (
            json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()
        )
        return {row["unit"]: row for row in rows}

    def annotate(self, samples: Sequence[Sample], items: Mapping[str, PromptItem]) -> list[Annotation]:
        stored = self._stored()
        todo = [sample for sample in samples if sample.unit not in stored]
        if todo:
            self._judge_all(todo, items, len(samples) - len(todo), len(samples))
            stored = self._stored()
        return [annotation_of(stored[sample.unit], sample.response) for sample in samples]

    def _judge_all(
        self, todo: list[Sample], items: Mapping[str, PromptItem], judged: int, total: int
    ) -> None:
        """Judge `todo`, `workers` at a time, appending (and fsyncing) each judgment as it finishes."""
        failure: JudgeUnavailable | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(self.judge_sample, sample, items[sample.id]) for sample in todo]
            try:
                for future in as_completed(futures):
                    try:
                        row = future.result()
                    except CancelledError:
                        continue
                    except JudgeUnavailable as error:
                        failure = failure or error
                        for other in futures:
                            other.cancel()
                        continue
                    append_text(self.path, json.dumps(row, ensure_ascii=False) + "\n")
                    judged += 1
            except BaseException:
                for other in futures:  # Ctrl-C or an unreadable image: send no further requests
                    other.cancel()
                raise
        if failure is not None:
            raise JudgeUnavailable(
                f"{failure}; {judged} of {total} samples judged so far are kept in {self.path}: "
                "run the same command again to resume"
            )
