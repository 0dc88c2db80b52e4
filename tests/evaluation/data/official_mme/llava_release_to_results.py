"""Puts LLaVA-1.5's released MME answers into the eval_tool's results layout (a check on real answers).

LLaVA's answers (haotian-liu/LLaVA at 32cebc3, playground/data/eval/MME/answers/llava-v1.5-13b.jsonl)
name a question by its image path and LLaVA's prompt; each line of the eval_tool's Your_Results
template gets the answer whose image and question (without "Please answer yes or no." and LLaVA's
instruction) match it, as LLaVA's convert_answer_to_mme.py pairs them. Also writes answers.jsonl
(chip's answer rows) for the same answers.

    python llava_release_to_results.py YOUR_RESULTS_DIR LLAVA_ANSWERS_JSONL OUT
"""

import json
import sys
from pathlib import Path

template, llava_answers, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
instruction = "Answer the question using a single word or phrase."
answers = {}
for line in llava_answers.read_text(encoding="utf-8").splitlines():
    row = json.loads(line)
    parts = row["question_id"].split("/")
    answers[parts[0], parts[-1], row["prompt"].replace(instruction, "").strip()] = row["text"]
(out / "results").mkdir(parents=True, exist_ok=True)
rows = []
for path in sorted(template.glob("*.txt")):
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        image, question, truth = line.split("\t")
        answer = answers[path.stem, image, question.replace("Please answer yes or no.", "").strip()]
        lines.append("\t".join([image, question, truth, answer]) + "\n")
        rows.append({"question_id": f"{path.stem}/{image}/{question}", "answer": answer})
    (out / "results" / path.name).write_text("".join(lines), encoding="utf-8")
(out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
print(len(rows), "answers")
