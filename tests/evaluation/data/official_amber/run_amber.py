"""Runs AMBER inference.py (junyangwang0410/AMBER) as it is on a fixture, with stand-ins for the models
that cannot be installed offline: every token tagged NN, lemmas = tokens, spaCy similarity 0."""

import contextlib
import io
import json
import runpy
import sys
import types

import nltk
import nltk.stem

fix = sys.argv[1]
spacy = types.ModuleType("spacy")


class _Doc:
    def similarity(self, other):
        return 0.0


spacy.load = lambda name: lambda text: _Doc()
sys.modules["spacy"] = spacy
nltk.pos_tag = lambda tokens: [(t, "NN") for t in tokens]
nltk.stem.WordNetLemmatizer.lemmatize = lambda self, word, pos="n": word
sys.argv = [
    "inference.py",
    "--word_association",
    f"{fix}/relation.json",
    "--safe_words",
    f"{fix}/safe_words.txt",
    "--inference_data",
    f"{fix}/answers.json",
    "--annotation",
    f"{fix}/annotations.json",
    "--metrics",
    "/tmp/official/amber/metrics.txt",
    "--evaluation_type",
    "a",
]
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    runpy.run_path("/tmp/official/amber/inference.py", run_name="__main__")
section, result = None, {}
for line in buf.getvalue().splitlines():
    line = line.strip()
    if line.endswith(":") and "\t" not in line:
        section = line[:-1]
        result[section] = {}
    elif ":" in line:
        k, v = line.split(":", 1)
        result[section][k.strip()] = float(v)
json.dump(result, open(f"{fix}/expected.json", "w"), indent=1)
print(result)
