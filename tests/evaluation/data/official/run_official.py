"""Runs the official scorers on a fixture folder and writes expected.json (outside the chip project).

CHAIR: LisaAnne/Hallucination utils/chair.py (py3 syntax port of its print statements only),
Pattern singularize (clips/pattern), NLTK word_tokenize with the English punkt_tab tables.
Recall = OPERA chair.py formula; CHAIRs_refine = RLHF-V eval_gpt_obj_halbench.py formula.
POPE: RUCAIBox/POPE evaluate.py run as-is on each split with its two paths filled in.
"""

import contextlib
import io
import json
import os
import runpy
import sys

fix = os.path.abspath(sys.argv[1])
here = os.path.dirname(os.path.abspath(__file__))
os.chdir(os.path.join(here, "lisa"))
sys.path.insert(0, os.getcwd())
import chair as official  # noqa: E402 (the reference module, found through sys.path above)

answers = [json.loads(line) for line in open(f"{fix}/chair_answers.jsonl")]
cap_file = f"{fix}/_caps.json"
json.dump(
    {
        "overall": {
            k: 0 for k in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr", "SPICE", "ROUGE_L"]
        },
        "imgToEval": {
            str(a["image_id"]): {
                "image_id": a["image_id"],
                "caption": a["answer"],
                **{
                    k: 0
                    for k in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr", "SPICE", "ROUGE_L"]
                },
            }
            for a in answers
        },
    },
    open(cap_file, "w"),
)
_, imids, _ = official.load_generated_captions(cap_file)
with contextlib.redirect_stdout(io.StringIO()):
    ev = official.CHAIR(imids, f"{fix}/coco")
    ev.get_annotations()
    out = ev.compute_chair(cap_file)
os.remove(cap_file)
per = []
n_rec = n_gt = n_obj_caps = 0
for s in out["sentences"]:
    words, node_words, _, raw = ev.caption_to_words(s["caption"])
    assert node_words == s["mscoco_generated_words"]
    gt = set(s["mscoco_gt_words"])
    correct = {n for n in node_words if n in gt}  # OPERA: recall_gt_objects
    n_rec += len(correct)
    n_gt += len(gt)
    n_obj_caps += len(words) > 0  # RLHF-V: num_coco_caps
    per.append(
        {
            "image_id": s["image_id"],
            "caption": s["caption"],
            "words": words,
            "objects": node_words,
            "hallucinated": [list(p) for p in s["mscoco_hallucinated_words"]],
            "truth": sorted(gt),
        }
    )
m = out["overall_metrics"]
n_hal_caps = sum(1 for p in per if p["hallucinated"])
chair = {
    "chair_i": m["CHAIRi"],
    "chair_s": m["CHAIRs"],
    "recall": n_rec / n_gt,
    "chair_s_refined": n_hal_caps / n_obj_caps,
    "captions": sorted(per, key=lambda p: p["image_id"]),
}

pope_src = open(os.path.join(here, "pope_evaluate.py")).read()
pope = {"splits": {}, "answers": []}
for split in ("random", "popular", "adversarial"):
    code = pope_src.replace(
        "ans_file = ''", f"ans_file = {fix + '/pope_' + split + '_answers.jsonl'!r}"
    ).replace("label_file = ''", f"label_file = {fix + '/pope_' + split + '.jsonl'!r}")
    path = f"{here}/_pope_run.py"
    open(path, "w").write(code)
    with contextlib.redirect_stdout(io.StringIO()):
        g = runpy.run_path(path)
    qids = [json.loads(line)["question_id"] for line in open(f"{fix}/pope_{split}_answers.jsonl")]
    pope["answers"] += [
        {"split": split, "question_id": q, "reading": a["answer"]} for q, a in zip(qids, g["answers"])
    ]
    pope["splits"][split] = {
        "accuracy": g["acc"],
        "precision": g["precision"],
        "recall": g["recall"],
        "f1": g["f1"],
        "yes_ratio": g["yes_ratio"],
        "tp": g["TP"],
        "fp": g["FP"],
        "tn": g["TN"],
        "fn": g["FN"],
    }
keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
pope["average"] = {k: sum(s[k] for s in pope["splits"].values()) / 3 for k in keys}
json.dump({"chair": chair, "pope": pope}, open(f"{fix}/expected.json", "w"), indent=1)
print({k: v for k, v in chair.items() if k != "captions"}, pope["average"])
