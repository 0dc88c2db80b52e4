"""A ScienceQA-style fixture: problems with 2-5 choices, some with an image, awkward predictions.

Writes OUT/problems.json and OUT/pid_splits.json (ScienceQA's layout: problem id -> question,
choices, answer index, hint, image or null, split), OUT/llava_test_CQM-A.json (LLaVA's question
file for the test split: the human turn, "<image>\\n" first when the problem has an image) and
OUT/answers.jsonl (rows as LLaVA's model_vqa_science writes them: question_id, prompt with
"<image>" for image problems, text). Some test problems are left unanswered, and a few answers
are to validation problems, which the test split does not score."""

import json
import random
import sys
from pathlib import Path

LETTERS = "ABCDE"
SUBJECTS = ["natural science", "social science", "language science"]
WORDS = [
    "granite",
    "oxygen",
    "Ohio",
    "Texas",
    "a metaphor",
    "an idiom",
    "melting",
    "freezing",
    "Asia",
    "Africa",
    "shiny",
    "opaque",
    "true",
    "false",
    "33 minutes",
    "33 hours",
]


def predictions(letter: str, n: int, text: str, rng: random.Random) -> list[str]:
    """Answers in the forms the reference does and does not read."""
    other = rng.choice([c for c in LETTERS[:n] if c != letter] or ["A"])
    return [
        letter,
        f"{letter}. {text}",
        f"The answer is {letter}.",
        f"The answer is {letter}",
        f"the answer is {letter}.",
        f"({letter})",
        letter.lower(),
        f" {letter}",
        f"{letter}\n",
        f"{letter}.",
        f"{letter}. ",
        f"{letter}.{text}",
        text,
        f"Answer: {letter}",
        "",
        LETTERS[n] if n < 5 else "F",
        f"The answer is {letter}. The answer is {other}.",
        f"The answer is {letter}{other}",
        "FAILED",
        f"I think the answer is {letter}. Because {text}.",
        other,
        f"{other}. {text}",
        "The answer is Z.",
        f"{letter}, {text}",
        f"The answer is ({letter}).",
        f"{letter}\n{letter}",
        f"{letter}:",
    ]


out = Path(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
out.mkdir(parents=True, exist_ok=True)
problems, splits, llava, answers = {}, {"test": [], "val": []}, [], []
for number in range(1, 91):
    pid = str(number * 7 + rng.randrange(7))
    split = "val" if number % 9 == 0 else "test"
    n = rng.randint(2, 5)
    choices = rng.sample(WORDS, n)
    answer = rng.randrange(n)
    hint = rng.choice(["", "Select the best answer.", "Read the passage.\nThen answer."])
    image = "image.png" if rng.random() < 0.55 else None
    question = rng.choice(["Which of these is it?", "Which word fits?", "What is shown?"])
    problems[pid] = {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": hint,
        "image": image,
        "task": "closed choice",
        "grade": "grade5",
        "subject": rng.choice(SUBJECTS),
        "topic": "fixture",
        "category": "fixture",
        "skill": "fixture",
        "lecture": "",
        "solution": "",
        "split": split,
    }
    splits[split].append(pid)
    text = (
        (f"Context: {hint}\n" if hint else "")
        + question
        + "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    )
    if split == "test":
        entry = {
            "id": pid,
            "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": LETTERS[answer]}],
        }
        if image:
            entry = {"id": pid, "image": f"{pid}/{image}", **entry}
            entry["conversations"][0]["value"] = "<image>\n" + text
        llava.append(entry)
    if rng.random() < 0.06:
        continue  # unanswered
    pool = predictions(LETTERS[answer], n, choices[answer], rng)
    prompt = (
        ("<image>\n" if image else "")
        + text
        + "\nAnswer with the option's letter from the given choices directly."
    )
    answers.append(
        {"question_id": pid, "prompt": prompt, "text": rng.choice(pool[:3] if rng.random() < 0.3 else pool)}
    )
json.dump(problems, open(out / "problems.json", "w"), indent=1)
json.dump(splits, open(out / "pid_splits.json", "w"), indent=1)
json.dump(llava, open(out / "llava_test_CQM-A.json", "w"), indent=1)
(out / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
print(len(problems), "problems,", len(answers), "answers")
