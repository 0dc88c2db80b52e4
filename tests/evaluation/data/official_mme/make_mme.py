"""An MME-style fixture: all 14 subtasks, two yes/no questions per image, awkward predictions.

Writes OUT/results/TASK.txt (the benchmark's results layout: image, question, ground truth and
prediction, tab-separated, an image's two questions on consecutive lines), OUT/questions/TASK.txt
(the same without predictions, as the eval_tool's Your_Results template ships) and
OUT/answers.jsonl (the same predictions as chip answer rows). A few JSONL answers hold line
breaks; in results/ they are deleted, as the eval_tool readme asks."""

import json
import random
import sys
from pathlib import Path

TASKS = [
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
]
# Each is read by its first four lower-cased characters unless it is exactly yes/no.
AWKWARD = [
    "Yes",
    "No",
    "yes",
    "no",
    "YES",
    "NO",
    "Yes.",
    "No.",
    "Yes, there is a dog.",
    "No, there is not.",
    "Not at all.",
    "Nope",
    "Yeah",
    "eyes",
    "snow",
    "know",
    "none",
    " yes",
    "  yes",
    "",
    "I think yes.",
    "There is no dog.",
    "The answer is yes.",
    "Y",
    "N",
    "nO",
    "yesno",
    "noyes",
    "Absolutely",
    "1",
    "No\nthere is none",
    "Yes\r\nIt is.",
    "y\nes",
    "ye s",
    "On",
    "Yes!",
    "(yes)",
    "no.",
    "Answer: no",
]

out = Path(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
(out / "results").mkdir(parents=True, exist_ok=True)
(out / "questions").mkdir(parents=True, exist_ok=True)
pool = list(AWKWARD)
rows = []
for task in TASKS:
    result_lines, question_lines = [], []
    for i in range(rng.choice([2, 3, 3])):
        image = f"{task}_{i:03d}.jpg" if task != "posters" else f"tt{rng.randrange(10**7):07d}.jpg"
        truths = ["Yes", "No"] if rng.random() < 0.8 else [rng.choice(["Yes", "No"])] * 2
        for k, truth in enumerate(truths):
            thing = rng.choice(["dog", "red car", "clock", "number 7", "word 'exit'"])
            question = f"Is there a {thing} in this image? Please answer yes or no."
            if k == 1 and rng.random() < 0.2:
                question = question.replace("? Please", "?  Please")  # MME's double space, kept as is
            question = question if k == 0 else question.replace("Is there", "Is there also")
            # Half the answers come from the awkward list (each used before any repeats), half are plain.
            if rng.random() < 0.7 and pool:
                answer = pool.pop(rng.randrange(len(pool)))
            else:
                answer = rng.choice([truth, truth.lower(), "Yes", "No"])
            rows.append({"question_id": f"{task}/{image}/{question}", "answer": answer})
            flat = answer.replace("\r", "").replace("\n", "")
            result_lines.append("\t".join([image, question, truth, flat]) + "\n")
            question_lines.append("\t".join([image, question, truth]) + "\n")
    (out / "results" / f"{task}.txt").write_text("".join(result_lines), encoding="utf-8")
    (out / "questions" / f"{task}.txt").write_text("".join(question_lines), encoding="utf-8")
assert not pool, f"{len(pool)} awkward answers unused; raise the share"
(out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
print(len(rows), "answers")
