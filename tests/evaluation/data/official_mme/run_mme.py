"""Runs MME's eval_tool/calculation.py (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation
branch) on OUT/results and writes OUT/expected.json. Holds none of the reference code: it imports
the reference's `calculate_metrics`, records what its own methods return while `process_result`
runs (each answer's reading, each subtask's metric dict) and parses what it prints (scores, totals).

    python run_mme.py OUT EVAL_TOOL_DIR
"""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

out, tool = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
spec = importlib.util.spec_from_file_location("calculation", tool / "calculation.py")
reference = importlib.util.module_from_spec(spec)
sys.argv = ["calculation.py"]  # the module builds an argparse parser at import time
spec.loader.exec_module(reference)

cal = reference.calculate_metrics()
readings, metric_dicts = [], []
parse, compute = cal.parse_pred_ans, cal.compute_metric


def recording_parse(pred_ans):
    readings.append(parse(pred_ans))
    return readings[-1]


def recording_compute(gts, preds):
    metric_dicts.append(compute(gts, preds))  # process_result adds "acc_plus" to this same dict
    return metric_dicts[-1]


cal.parse_pred_ans, cal.compute_metric = recording_parse, recording_compute
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    cal.process_result(str(out / "results"))

totals, scores = [], {}
for line in printed.getvalue().splitlines():
    if line.startswith("total score:"):
        totals.append(float(line.split(":", 1)[1]))
    elif " score:" in line:
        name, value = line.strip().split(" score:")
        scores[name.strip()] = float(value)
tasks = [t for group in reference.eval_type_dict.values() for t in group]
answers = []
for task in tasks:
    for line in (out / "results" / f"{task}.txt").read_text(encoding="utf-8").splitlines():
        image, question, _, _ = line.split("\t")
        answers.append({"task": task, "image": image, "question": question})
assert len(answers) == len(readings) and len(metric_dicts) == len(tasks)
expected = {
    "answers": [{**a, "reading": r} for a, r in zip(answers, readings)],
    "tasks": {
        t: {
            "acc": float(m["acc"]),
            "acc_plus": float(m["acc_plus"]),
            "other_num": int(m["other_num"]),
            "score": scores[t],
        }
        for t, m in zip(tasks, metric_dicts)
    },
    "perception": totals[0],
    "cognition": totals[1],
}
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
print(printed.getvalue())
