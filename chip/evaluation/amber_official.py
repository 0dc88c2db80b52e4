"""AMBER as its reference `inference.py` scores it (junyangwang0410/AMBER), as far as an offline machine allows.

Generative answers: the nouns of a response (NLTK `word_tokenize`, `pos_tag` tags NN*, WordNet
lemmas, no lower-casing) that are AMBER words (relation.json keys and their associated words) are
read one by one:

    a safe word (safe_words.txt)                 -> not hallucinated, still counted
    a truth object or a word associated with one -> not hallucinated; marks the first such truth entry covered
    otherwise                                    -> hallucinated, unless word vectors (spaCy
                                                    en_core_web_lg, similarity > 0.8) find it close
                                                    to a truth word; a "hallu" object or its
                                                    associated word (exact or close) marks that
                                                    "hallu" entry (Cog)

    CHAIR = hallucinated nouns / counted nouns     Cover = covered truth entries / truth entries
    Hal   = 1 - responses without hallucination / responses
    Cog   = marked "hallu" entries / "hallu" entries

Discriminative answers count only when they are exactly "Yes" or "No"; "No" is positive.
Every denominator starts at 0.001 (the reference's `metrics.txt`), each number is printed as a
percentage rounded to one decimal, and F1 is computed from those rounded precision and recall
with 0.0001 (0.001 for existence) added to the denominator. Results here are those printed
numbers divided by 100, so they match the reference's output digit for digit.

The tagger, WordNet and spaCy model are used when installed; otherwise the metrics JSON names the
fallback (`noun_reading`, `similarity`): chip's vocabulary noun reading and exact matching only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from chip.evaluation.amber import AmberAnnotations, extract_nouns

_START = 0.001  # every denominator of the reference's metrics.txt starts here
# annotation type -> reference counter group; any other non-generative type is a relation question
_GROUPS = {
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
    "discriminative-hallucination": "existence",
}


def _printed(numerator: float, denominator: float) -> float:
    return round(numerator / denominator * 100, 1)


@dataclass
class _Counts:
    correct: float = 0
    total: float = _START
    said_no_correct: float = 0  # answered "No" and the truth is no
    said_no: float = _START
    truth_no_correct: float = 0
    truth_no: float = _START

    @staticmethod
    def pooled(parts: Sequence[_Counts], start: float) -> _Counts:
        """The counts of `parts` together, each denominator starting at `start` instead of theirs."""
        return _Counts(
            sum(p.correct for p in parts),
            sum(p.total - _START for p in parts) + start,
            sum(p.said_no_correct for p in parts),
            sum(p.said_no - _START for p in parts) + start,
            sum(p.truth_no_correct for p in parts),
            sum(p.truth_no - _START for p in parts) + start,
        )

    def printed(self, f1_epsilon: float = 0.0001) -> dict[str, float]:
        accuracy = _printed(self.correct, self.total)
        precision = _printed(self.said_no_correct, self.said_no)
        recall = _printed(self.truth_no_correct, self.truth_no)
        f1 = round(
            2 * (precision / 100) * (recall / 100) / (precision / 100 + recall / 100 + f1_epsilon) * 100, 1
        )
        return {
            "accuracy": accuracy / 100,
            "precision": precision / 100,
            "recall": recall / 100,
            "f1": f1 / 100,
        }


def discriminative_scores(answers: Mapping[Hashable, str], items: Mapping[int, dict]) -> dict:
    """Accuracy, precision, recall, F1 ("No" positive, exact "Yes"/"No" only), overall and per dimension."""
    groups: dict[str, _Counts] = {}
    for key, response in answers.items():
        item = items[int(key)]
        counts = groups.setdefault(_GROUPS.get(item["type"], "relation"), _Counts())
        counts.total += 1
        truth_no = item["truth"] != "yes"
        counts.correct += (response == "Yes" and not truth_no) or (response == "No" and truth_no)
        counts.truth_no += truth_no
        counts.truth_no_correct += truth_no and response == "No"
        counts.said_no += response == "No"
        counts.said_no_correct += response == "No" and truth_no
    # Overall has one counter of its own; attribute adds up three, each starting at 0.001.
    overall = _Counts.pooled(list(groups.values()), _START)
    result: dict = {**overall.printed(), "n_discriminative": len(answers), "dimensions": {}}
    for name, counts in sorted(groups.items()):
        result["dimensions"][name] = counts.printed(0.001 if name == "existence" else 0.0001)
    if any(g in groups for g in ("state", "number", "action")):
        attribute = [groups.get(g, _Counts()) for g in ("state", "number", "action")]
        result["dimensions"]["attribute"] = _Counts.pooled(attribute, 3 * _START).printed()
    return result


def _mark_first(
    noun: str, objects: Sequence[str], association: Mapping[str, Sequence[str]], marked: list[int]
) -> bool:
    # The reference searches the associated words of all objects first, then the objects themselves,
    # and marks the object behind the first hit.
    for index, obj in enumerate(objects):
        if noun in association.get(obj, ()):
            marked[index] = 1
            return True
    for index, obj in enumerate(objects):
        if noun == obj:
            marked[index] = 1
            return True
    return False


def _mark_first_similar(
    noun: str,
    objects: Sequence[str],
    association: Mapping[str, Sequence[str]],
    marked: list[int],
    similar: Callable[[str, str], bool],
) -> bool:
    candidates = [(i, w) for i, obj in enumerate(objects) for w in association.get(obj, ())]
    candidates += list(enumerate(objects))
    for index, word in candidates:
        if similar(noun, word):
            marked[index] = 1
            return True
    return False


def generative_scores(
    answers: Mapping[Hashable, str],
    annotations: AmberAnnotations,
    nouns: Callable[[str], list[str]],
    similar: Callable[[str, str], bool] | None = None,
) -> dict:
    """CHAIR, Cover, Hal and Cog as the reference prints them (fractions of its rounded percentages)."""
    association = annotations.raw_association
    vocabulary = set(association) | {w for words in association.values() for w in words}
    chair_score, chair_num = 0, _START
    cover_score, cover_num = 0, _START
    cog_score, cog_num = 0, _START
    clean, responses = 0, _START
    n_nouns = 0
    for key, text in answers.items():
        item = annotations.items[int(key)]
        truth, hallu = list(item["truth"]), list(item.get("hallu", []))
        covered, cognised = [0] * len(truth), [0] * len(hallu)
        hallucinated = 0
        kept = [n for n in nouns(text) if n in vocabulary]
        for noun in kept:
            if noun in annotations.raw_safe_words:
                continue
            if _mark_first(noun, truth, association, covered):
                continue
            _mark_first(noun, hallu, association, cognised)
            if similar is not None:
                _mark_first_similar(noun, hallu, association, cognised, similar)
                if _mark_first_similar(noun, truth, association, covered, similar):
                    continue
            hallucinated += 1
        n_nouns += len(kept)
        chair_score += hallucinated
        chair_num += len(kept)
        cover_score += sum(covered)
        cover_num += len(truth)
        cog_score += sum(cognised)
        cog_num += len(hallu)
        clean += hallucinated == 0
        responses += 1
    return {
        "chair": _printed(chair_score, chair_num) / 100,
        "cover": _printed(cover_score, cover_num) / 100,
        "hal": round(100 - clean / responses * 100, 1) / 100,
        "cog": _printed(cog_score, cog_num) / 100,
        "n_generative": len(answers),
        "n_nouns": n_nouns,
        "n_hallucinated_nouns": chair_score,
    }


def reference_nouns() -> tuple[Callable[[str], list[str]] | None, str]:
    """The reference's noun reader when NLTK's tagger and WordNet data are installed, and its name."""
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
        nltk.data.find("corpora/wordnet.zip")
    except LookupError:
        return None, "chip's vocabulary noun reading (NLTK tagger / WordNet data not installed)"
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()

    def nouns(text: str) -> list[str]:
        tagged = nltk.pos_tag(nltk.word_tokenize(text))
        return [lemmatizer.lemmatize(word) for word, tag in tagged if tag.startswith("NN")]

    return nouns, "NLTK word_tokenize + pos_tag NN* + WordNet lemmas (reference)"


def reference_similarity() -> tuple[Callable[[str, str], bool] | None, str]:
    """spaCy en_core_web_lg similarity > 0.8 when that model is installed, and its name."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_lg")
    except (ImportError, OSError):
        return None, "exact and association matches only (spaCy en_core_web_lg not installed)"
    return (lambda a, b: nlp(a).similarity(nlp(b)) > 0.8), "spaCy en_core_web_lg similarity > 0.8 (reference)"


def amber_official_scores(
    answers: Mapping[Hashable, str],
    annotations: AmberAnnotations,
    nouns: Callable[[str], list[str]] | None = None,
    similar: Callable[[str, str], bool] | None = None,
    noun_reading: str = "given",
    similarity: str = "given",
) -> dict:
    """Both parts as the reference prints them; `nouns` defaults to chip's vocabulary reading."""
    if nouns is None:
        vocabulary = annotations.vocabulary
        nouns = lambda text: extract_nouns(text, vocabulary)  # noqa: E731
    generative = {k: v for k, v in answers.items() if annotations.items[int(k)]["type"] == "generative"}
    discriminative = {k: v for k, v in answers.items() if k not in generative}
    result: dict = {}
    if generative:
        result.update(generative_scores(generative, annotations, nouns, similar))
        result["noun_reading"] = noun_reading
        result["similarity"] = similarity
    if discriminative:
        result.update(discriminative_scores(discriminative, annotations.items))
    if generative and discriminative:
        result["amber_score"] = round(((100 - result["chair"] * 100) + result["f1"] * 100) / 2, 2) / 100
    return result
