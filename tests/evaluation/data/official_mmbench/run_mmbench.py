"""Runs VLMEvalKit's MMBench evaluation (open-compass/VLMEvalKit) on a fixture and writes
OUT/expected.json. Holds none of the reference code: it imports the fetched package and calls
`ImageMCQDataset.evaluate_heuristic` as `run.py` does for MMBench_DEV_EN, once with
`exact_matching` (no judge) and once with a stand-in judge that answers from OUT/judge.json.

The predictions go through VLMEvalKit's own `dump`/`load` of a prediction file (xlsx, its default
format), as between its inference and evaluation steps. `vlmeval/__init__.py` and
`vlmeval/dataset/__init__.py` import every model and dataset (and their dependencies); the
packages are therefore registered empty and only the modules the evaluation uses are imported.

    python run_mmbench.py OUT VLMEVALKIT_DIR
"""

import json
import sys
import tempfile
import threading
import types
from pathlib import Path

out, root = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
for name in ("vlmeval", "vlmeval.dataset", "vlmeval.dataset.utils"):
    package = types.ModuleType(name)
    package.__path__ = [str(root / name.replace(".", "/"))]
    sys.modules[name] = package
import vlmeval.dataset.utils.judge_util as judge_util  # noqa: E402

sys.modules["vlmeval.dataset.utils"].build_judge = judge_util.build_judge
sys.modules["vlmeval.dataset.utils"].DEBUG_MESSAGE = judge_util.DEBUG_MESSAGE
import vlmeval.dataset.image_mcq as image_mcq  # noqa: E402
from vlmeval.dataset.utils.multiple_choice import prefetch_answer  # noqa: E402
from vlmeval.smp import dump, load  # noqa: E402

replies = json.loads((out / "judge.json").read_text(encoding="utf-8"))


class StandInJudge:
    """Answers a prompt from judge.json by the one listed prediction it contains (else "Z")."""

    def __init__(self):
        self.calls, self.lock = {}, threading.Lock()

    def working(self):
        return True

    def generate(self, prompt):
        keys = [k for k in replies if k in prompt]
        assert len(keys) <= 1, keys
        if not keys:
            return "Z"
        with self.lock:
            attempt = self.calls.get(keys[0], 0)
            self.calls[keys[0]] = attempt + 1
        assert attempt < len(replies[keys[0]]), f"judge.json has no reply {attempt + 1} for {keys[0]!r}"
        return replies[keys[0]][attempt]


meta = load(str(out / "questions.tsv"))
answers = {a["question_id"]: a["answer"] for a in map(json.loads, open(out / "answers.jsonl"))}
dataset = types.SimpleNamespace(dataset_name="MMBench_DEV_EN", data=meta)


def evaluate(judge):
    with tempfile.TemporaryDirectory() as tmp:
        data = meta[meta["index"].isin(answers)].copy()
        data.pop("image")
        data["prediction"] = [answers[i] for i in data["index"]]
        eval_file = f"{tmp}/Model_MMBench_DEV_EN.xlsx"
        dump(data, eval_file)
        if judge is None:
            acc = image_mcq.ImageMCQDataset.evaluate_heuristic(dataset, eval_file, model="exact_matching")
        else:
            image_mcq.build_judge = lambda **kwargs: judge
            acc = image_mcq.ImageMCQDataset.evaluate_heuristic(dataset, eval_file, model="stand-in", nproc=1)
        record = load(
            eval_file.replace(".xlsx", "_stand-in_result.xlsx" if judge else "_exact_matching_result.xlsx")
        )
        read_back = load(eval_file)
    assert not any("randomly generate" in str(log) for log in record["log"]), "a judge reply list ran out"
    return {
        "report": {column: acc[column].tolist() for column in acc.columns},
        "hits": {str(int(i)): int(h) for i, h in zip(record["index"], record["hit"])},
        "read_back": read_back,
    }


exact = evaluate(None)
judge = StandInJudge()
judged = evaluate(judge)
assert set(judge.calls) == set(replies), f"judge never asked about {set(replies) - set(judge.calls)}"
# Each answer's reading without a judge (None: no option read), on the rows as evaluation reads them.
rows = exact["read_back"].to_dict("records")
read_back = {str(int(row["index"])): str(row["prediction"]) for row in rows}
prefetch = {
    str(int(row["index"])): prefetch_answer({**row, "prediction": str(row["prediction"])}) or None
    for row in rows
}
expected = {
    "prefetch": prefetch,
    "read_back": read_back,
    "exact_matching": {"hits": exact["hits"], "report": exact["report"]},
    "judge": {"hits": judged["hits"], "report": judged["report"], "calls": judge.calls},
}
(out / "expected.json").write_text(
    json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
)
print(json.dumps(exact["report"]), json.dumps(judged["report"]), judge.calls, sep="\n")
