"""Runs LLaVA's llava/eval/eval_science_qa.py (haotian-liu/LLaVA) on a fixture, as its
scripts/v1_5/eval/sqa.sh does, and writes OUT/expected.json. Holds none of the reference code: the
script runs as it is (`runpy`, with its command line), and its own outputs are read back — each
answer's parsed letter and correctness (--output-file), its per-problem choice index
(--output-result) and the totals it counts in its globals.

    python run_scienceqa.py OUT LLAVA_DIR
"""

import contextlib
import io
import json
import runpy
import sys
import tempfile
from pathlib import Path

out, llava = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
with tempfile.TemporaryDirectory() as tmp:
    sys.argv = [
        "eval_science_qa.py",
        "--base-dir",
        str(out),
        "--result-file",
        str(out / "answers.jsonl"),
        "--output-file",
        f"{tmp}/output.json",
        "--output-result",
        f"{tmp}/result.json",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = runpy.run_path(str(llava / "llava" / "eval" / "eval_science_qa.py"), run_name="__main__")
    output = json.loads(Path(f"{tmp}/output.json").read_text())
    result = json.loads(Path(f"{tmp}/result.json").read_text())
readings = {
    a["question_id"]: {
        "parsed": a["parsed_ans"],
        "correct": verdict == "correct",
        "is_multimodal": a["is_multimodal"],
    }
    for verdict in ("correct", "incorrect")
    for a in output[verdict]
}
expected = {
    "answers": {pid: {**readings[pid], "choice_index": index} for pid, index in result["results"].items()},
    "accuracy": run["correct"] / run["total"],
    "img_accuracy": run["multimodal_correct"] / run["multimodal_total"],
    "correct": run["correct"],
    "total": run["total"],
    "img_correct": run["multimodal_correct"],
    "img_total": run["multimodal_total"],
    "printed": printed.getvalue().strip(),
}
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
print(expected["printed"])
