"""Compares chip's option-letter reading with LLaVA's own on its released ScienceQA outputs.

LLaVA's eval_science_qa.py wrote, for each of the 4,241 test answers of LLaVA-1.5-13B, the answer
and the letter it parsed (haotian-liu/LLaVA at 32cebc3,
playground/data/eval/scienceqa/answers/llava-v1.5-13b_output.jsonl). This prints how many of those
letters chip's `read_letter` reads differently, and the IMG accuracy counted from the file.

    PYTHONPATH=REPO python check_llava_release.py LLAVA_OUTPUT_JSON
"""

import json
import sys

from chip.evaluation.scienceqa import read_letter

output = json.load(open(sys.argv[1], encoding="utf-8"))
rows = output["correct"] + output["incorrect"]
differ = [r["question_id"] for r in rows if (read_letter(r["pred"]) or "FAILED") != r["parsed_ans"]]
img = [r for r in output["correct"] if r["is_multimodal"]], [r for r in rows if r["is_multimodal"]]
print(f"{len(rows)} answers, {len(differ)} read differently; IMG accuracy {len(img[0]) / len(img[1]):.4f}")
