"""A small AMBER-style fixture: generative items with association words, safe words, duplicate truth
entries and hallu objects; discriminative items of every type, answered with exact and inexact strings."""

import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(int(sys.argv[2]))
relation = {
    "dog": ["puppy", "animal"],
    "cat": ["kitten", "animal"],
    "person": ["man", "woman", "people"],
    "tree": ["plant"],
    "car": ["vehicle", "taxi"],
    "grass": ["ground"],
    "road": ["street", "ground"],
    "sky": [],
    "cloud": [],
    "bench": ["seat"],
    "table": ["desk"],
    "cup": ["mug"],
    "bird": ["animal"],
    "building": ["house", "wall"],
    "light": [],
    "snack": [],
}
safe = ["light", "snack", "animal"]
objs = sorted(relation)
items, answers = [], []
words = objs + [w for v in relation.values() for w in v] + ["photo", "scene", "Dog", "dogs", "sky"]
for i in range(1, 41):
    truth = rng.sample(objs, 3) + ([rng.choice(objs)] if i % 5 == 0 else [])  # some duplicate truth entries
    hallu = rng.sample([o for o in objs if o not in truth], 2)
    items.append({"id": i, "type": "generative", "truth": truth, "hallu": hallu})
    pool = words if i % 3 else truth + [w for t in truth for w in relation[t]] + ["light", "scene"]
    text = " ".join(
        rng.choice(["A", "The", "There is a", "and a", "near the", "with"]) + " " + rng.choice(pool)
        for _ in range(rng.randint(2, 7))
    )
    answers.append({"id": i, "response": text + "."})
types = [
    "discriminative-hallucination",
    "discriminative-attribute-state",
    "discriminative-attribute-number",
    "discriminative-attribute-action",
    "discriminative-relation",
    "relation",
]
replies = ["Yes", "No", "Yes", "No", "No.", "yes", "no", "Yes, there is.", " No", "No"]
for i in range(41, 101):
    items.append({"id": i, "type": types[i % len(types)], "truth": rng.choice(["yes", "no"])})
    answers.append({"id": i, "response": rng.choice(replies)})
json.dump(items, open(out / "annotations.json", "w"), indent=0)
json.dump(relation, open(out / "relation.json", "w"), indent=0)
(out / "safe_words.txt").write_text("\n".join(safe) + "\n")
json.dump(answers, open(out / "answers.json", "w"), indent=0)
