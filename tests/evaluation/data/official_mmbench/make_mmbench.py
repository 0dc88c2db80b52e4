"""An MMBench-style fixture: questions with their circular copies and awkward predictions.

Writes OUT/questions.tsv (the layout of MMBench's TSV files: index, question, hint, A-D, answer,
category, l2-category, split, image; copy k of question i has index i + k * 1e6, its options
rotated by k, and its image cell names the main row, as VLMEvalKit's files do),
OUT/answers.jsonl (chip answer rows; a few questions left unanswered) and OUT/judge.json
(for predictions that the reference cannot read without a judge: the replies a stand-in judge
gives, one per attempt)."""

import base64
import csv
import io
import json
import random
import sys
from pathlib import Path

from PIL import Image

CATEGORIES = {
    "coarse_perception": ["image_scene", "image_style"],
    "finegrained_perception (instance-level)": ["attribute_recognition", "object_localization"],
    "logic_reasoning": ["structuralized_imagetext_understanding"],
    "relation_reasoning": ["social_relation"],
    "attribute_reasoning": ["function_reasoning"],
}
OPTIONS = [
    ["cat", "dog", "horse", "zebra"],
    ["a red apple", "a green pear", "a yellow banana"],
    ["sunny", "rainy"],
    ["kitchen", "bedroom", "garden", "office"],
    ["None", "two", "three", "four"],
    ["NA", "left", "right"],
    ["oil painting", "photograph", "sketch", "cartoon"],
    ["friends", "colleagues", "family"],
    ["to cut paper", "to write", "to measure"],
    ["north", "south", "east", "west"],
    ["1", "2", "3"],
    ["circle", "square"],
]
# Predictions no rule reads; the judge stand-in answers each (a list: one reply per attempt).
JUDGED = {
    "Hmm, hard to say, maybe the second one?": ["B"],
    "It could be any of them, honestly.": ["Z"],
    "I would go with the thing on the left.": ["I am not sure.", "A"],
    "My guess: the last of the options.": ["Failed to obtain answer via API", "The answer is B", "A"],
    "Probably what you see at the top.": ["b", "B"],
    "Neither of those seem right to me at all.": ["Option D", "(A)", "A"],
    "Something else entirely, I think.": ["The correct answer is **B**."],
}


def tiny_png(seed: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (seed * 40 % 256, 90, 160)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def predictions(options: list[str], letters: list[str], answer: str, rng: random.Random) -> list[str]:
    """Candidate answers for one row: letters in many dresses, option texts, refusals, empties."""
    right, wrong = options[letters.index(answer)], rng.choice(options)
    return [
        answer,
        answer.lower(),
        f"({answer})",
        f"{answer}.",
        f"**{answer}**",
        f"Answer: {answer}",
        f"{answer}. {right}",
        right,
        right.upper(),
        f"I think it is {right}.",
        f"The answer is a {right}",
        f"The answer is {rng.choice(letters)}",
        f"answer is {answer.lower()}",
        f"{answer}\n\nBecause of the image.",
        f"{answer} is right because the picture shows it quite clearly here",
        f"A {right} is in the image.",
        f"{letters[0]} or {letters[-1]}",
        "Z",
        "Sorry, I can't help with images of people yet.",
        "Cannot determine the answer",
        "",
        "None",
        "NA",
        "null",
        " None",
        "n/a",
        "E",
        "D",
        wrong,
        " ".join([right] * 12),
        f"[{answer}]",
        f"{answer}:",
        "Failed to obtain answer via API",
    ]


out = Path(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
out.mkdir(parents=True, exist_ok=True)
rows, answers = [], []
judged = list(JUDGED)
# In these questions one copy gets a judged prediction and the others are read right, so that the
# group's outcome rests on the judge (options read as missing, "None" and "NA", would fail it first).
plain = [n for n, o in enumerate(OPTIONS * 2, start=1) if not {"None", "NA"} & set(o)]
judge_questions = rng.sample(plain, len(JUDGED))
for number, options in enumerate(OPTIONS * 2, start=1):
    judged_copy = rng.randrange(len(options)) if number in judge_questions else None
    l2 = rng.choice(sorted(CATEGORIES))
    category = rng.choice(CATEGORIES[l2])
    letters = "ABCD"[: len(options)]
    answer = rng.choice(letters)
    hint = rng.choice([None, "Look at the picture.", "nan"])
    question = rng.choice(["What is shown in the image?", "Which option fits best", "Where is this?"])
    for k in range(len(options)):
        shifted = options[k:] + options[:k]
        index = number + k * 1_000_000
        row = {
            "index": index,
            "question": question,
            "hint": hint,
            **{letter: shifted[j] if j < len(shifted) else None for j, letter in enumerate("ABCD")},
            "answer": letters[(letters.index(answer) - k) % len(letters)],
            "category": category,
            "l2-category": l2,
            "split": "dev",
            "image": tiny_png(number) if k == 0 else str(number),
        }
        rows.append(row)
        if judged_copy is not None:
            prediction = (
                judged.pop() if k == judged_copy else rng.choice([row["answer"], f"({row['answer']})"])
            )
        elif rng.random() < 0.05:
            continue  # unanswered
        else:
            # Mostly right answers in many dresses (the first ten), so that some groups hold.
            pool = predictions(shifted, list(letters), row["answer"], rng)
            prediction = rng.choice(pool[:10] if rng.random() < 0.7 else pool)
        answers.append({"question_id": index, "answer": prediction})
assert not judged, "not every judged prediction was used"
with open(out / "questions.tsv", "w", newline="", encoding="utf-8") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
(out / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
(out / "judge.json").write_text(json.dumps(JUDGED, indent=1) + "\n", encoding="utf-8")
print(len(rows), "rows,", len(answers), "answers")
