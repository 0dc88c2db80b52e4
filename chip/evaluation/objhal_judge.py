"""Object HalBench with a judge: RLHF-V's procedure (`eval/eval_gpt_obj_halbench.py`).

RLHF-V (Yu et al., 2024) scores Object HalBench by first asking a judge LLM which objects a
response mentions, then filtering those through the CHAIR synonym table:

    response of <= 3 words             -> no objects, no judge call
    else judge(prompt(question, answer)) -> a JSON list of object names (a reply that is not JSON
                                           is read from its last line when it holds '["')
    each name "x": lemmas of "a x"      -> the listed two-word phrases among them, if any,
                                           else its runs of nouns (spaCy tags NN, NNS, NNP, NNPS)
    unique names -> toilet-seat rule -> synonym entries -> COCO classes

The objects then go through the usual CHAIR counting (`chip.evaluation.chair.chair_scores`).

Offline differences, named in the metrics: RLHF-V lemmatises with spaCy `en_core_web_trf`, used
when installed; otherwise each name is lower-cased, tokenised and singularised as the official
CHAIR reading does, and its nouns are taken as the last word of each part between "of", "with",
"and", "or", "on", "in", "for", commas and possessives ("cup of coffee" -> cup, coffee; "orange
cat" -> cat). The synonym filter and ground truth are the reference CHAIR ones
(`chip.evaluation.chair_official`); RLHF-V's refined synonym file is not shipped. RLHF-V's prompt
is not shipped either: `load_reference_prompt` reads it from the user's copy of the script, else
chip's own wording of the same instructions is used. An unreadable judge reply counts as no
objects and is reported in `n_unparseable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

from chip.errors import ConfigError
from chip.evaluation.chair_official import OfficialChairReader
from chip.evaluation.judge import JudgeClient, read_script_string
from chip.evaluation.official_text import pattern_singularize, word_tokenize

# chip's own wording of RLHF-V's extraction instructions ({question} and {answer} are replaced).
PROMPT = """We asked someone to answer a question about a picture. Assume the answer is correct.

Question: {question}

Answer: {answer}

List every object that the answer explicitly says is visible in the picture. Give object names
only: no attributes, colours, materials or other properties. Reply with a JSON list of strings,
["object_1", ..., "object_n"], and with [] when there is none.
"""

_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
_SPLITTERS = frozenset({"of", "with", "and", "or", "on", "in", "for", ",", "'s", "'"})


def load_reference_prompt(path: str | Path) -> str:
    """RLHF-V's prompt: the string assigned to `prompt_template` in the user's
    `eval_gpt_obj_halbench.py`, or a text file holding it (with `{question}` and `{answer}`)."""
    text = read_script_string(path, "prompt_template", "eval_gpt_obj_halbench.py")
    if "{question}" not in text or "{answer}" not in text:
        raise ConfigError(f"{path}: the prompt must contain {{question}} and {{answer}}")
    return text


def build_prompt(question: str, answer: str, template: str = PROMPT) -> str:
    """The prompt for one response, filled by plain replacement as RLHF-V does."""
    return template.replace("{question}", question).replace("{answer}", answer)


def parse_object_list(reply: str) -> list[str] | None:
    """The judge's JSON list of object names (or its last line's, when it holds '["'); None if unreadable."""
    for candidate in (reply, reply.strip().split("\n")[-1] if '["' in reply else None):
        if candidate is None:
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return None


def spacy_names() -> tuple[Callable[[str, OfficialChairReader], list[str]] | None, str]:
    """RLHF-V's name reader (spaCy en_core_web_trf lemmas and tags) when installed, and its label."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_trf")
    except (ImportError, OSError):
        return (
            None,
            "official tokens + Pattern singular, last word per part (spaCy en_core_web_trf not installed)",
        )

    def names(text: str, reader: OfficialChairReader) -> list[str]:
        doc = nlp(f"a {text}")
        phrases = reader.phrases_only([token.lemma_ for token in doc])
        if phrases:
            return phrases
        runs, run = [], []
        for token in doc:
            if token.tag_ in _NOUN_TAGS:
                run.append(token.lemma_)
            elif run:
                runs.append(" ".join(run))
                run = []
        return runs + ([" ".join(run)] if run else [])

    return names, "spaCy en_core_web_trf lemmas and noun tags (reference)"


def offline_names(text: str, reader: OfficialChairReader) -> list[str]:
    """The fallback name reader: official tokens and singulars, listed phrases, else last word per part."""
    words = [pattern_singularize(w) for w in word_tokenize(f"a {text}".lower())]
    phrases = reader.phrases_only(words)
    if phrases:
        return phrases
    names, part = [], []
    for word in [*words[1:], ","]:
        if word in _SPLITTERS:
            if part:
                names.append(part[-1])
            part = []
        else:
            part.append(word)
    return names


@dataclass(frozen=True)
class JudgedObjects:
    """A mention reader over objects a judge listed: `mentions(text)` looks the response up."""

    objects: Mapping[str, list[tuple[str, str]]]  # response text -> (name, class) pairs
    reader: OfficialChairReader
    reading: str = "official"
    name: str = "coco"

    def mentions(self, text: str) -> list[tuple[str, str]]:
        return self.objects[text]

    def category_class(self, name: str) -> str | None:
        return self.reader.category_class(name)

    def word_count(self, text: str) -> int:
        return self.reader.word_count(text)


def judge_objects(
    answers: Mapping[Hashable, str],
    question: str,
    reader: OfficialChairReader,
    judge: JudgeClient,
    template: str = PROMPT,
    names: Callable[[str, OfficialChairReader], list[str]] = offline_names,
    workers: int = 4,
) -> tuple[JudgedObjects, int]:
    """The judge's objects for every answer, as a reader for `chair_scores`, and the unreadable count."""
    texts = list(dict.fromkeys(answers.values()))
    asked = [t for t in texts if len(t.strip().split()) > 3]
    prompts = [build_prompt(question, t, template) for t in asked]
    # RLHF-V sends its prompt as the one, system, message.
    replies = dict(zip(asked, judge.ask_many(prompts, parse_object_list, workers=workers, role="system")))
    objects: dict[str, list[tuple[str, str]]] = {}
    for text in texts:
        listed = replies.get(text) or []
        refined: list[str] = []
        for item in listed:
            refined += names(item, reader)
        objects[text] = reader.filter_objects(list(dict.fromkeys(refined)))
    unparseable = sum(replies[t] is None for t in asked)
    return JudgedObjects(objects, reader), unparseable
