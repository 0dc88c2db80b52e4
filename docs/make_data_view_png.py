"""Make docs/data-view.png: `chip data view` on a few pairs of the demo world, seen in headless Chromium.

    python docs/make_data_view_png.py            # needs chromium (apt-get install -y chromium)

The rows are `chip demo`'s preference pairs (scenes of coloured shapes, changed-word spans), two
of them without spans (so the collator derives them), plus three bad rows: markup in the prompt,
a missing image, identical responses. The corrupted images come from a tiny random LLaVA whose
processor works at 96×96 pixels, through the training collator (diffusion noise at step 500).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `chip` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chip.data.view import write_view  # noqa: E402
from chip.data.view_images import CorruptionSettings  # noqa: E402
from chip.demo.pairs import write_preference_pairs  # noqa: E402
from chip.demo.world import WorldConfig  # noqa: E402
from chip.testing import build_tiny_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "data-view.png"


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install -y chromium")
    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # relative paths, as a user types them, in the page's header
    data = write_preference_pairs(WorldConfig(image_size=96), Path("data"), count=6)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows[1:3]:
        del row["chosen_segments"], row["rejected_segments"]
    first = rows[0]
    rows[3:3] = [
        {**first, "id": "markup", "prompt": "Describe <script>alert('hi')</script> the image."},
        {**first, "id": "missing", "images": ["images/not-there.png"]},
        {**first, "id": "same", "rejected": first["chosen"]},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    build_tiny_model("llava", Path("tiny-llava"), image_size=96)
    page = Path("view.html")
    write_view(data, page, settings=CorruptionSettings(model="tiny-llava"), page_size=5)
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1500",
            "--virtual-time-budget=5000",
            f"--screenshot={OUT}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
