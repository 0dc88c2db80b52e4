"""Untrusted text stays text: a row, a model answer, a run name or a metric name holding ``<script>``
or a Markdown link shows as those characters in every Markdown report chip writes, rendered by a
real CommonMark renderer (markdown-it, with GFM tables).

Covered elsewhere: the data view page (tests/data/test_view.py, ``SCRIPT_PROMPT``: a browser-free
check that every dataset string reaches the page as text) and the escaping helpers themselves
(tests/pairs/test_annotators.py::test_markdown_escaping_renders_text_as_text).
"""

from __future__ import annotations

import pytest

from chip.evaluation.report import compare_table, metrics_table
from chip.pairs.report import render_markdown

HOSTILE = 'x <script>alert("x")</script> [a link](http://example.com) <img src=x onerror=alert(1)> | `c`'


def render(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)


def assert_text_only(html: str) -> None:
    assert "<script" not in html and "<a " not in html and "<img" not in html and "<code>" not in html
    assert "&lt;script&gt;" in html and "[a link](http://example.com)" in html


def test_pairs_report_shows_every_dataset_and_model_string_as_text() -> None:
    counts = {"drawn": 2, "unusable": {HOSTILE: 1}}
    report = {
        "model": {"model": HOSTILE},
        "annotator": {"annotator": HOSTILE, "url": HOSTILE},
        "inputs": {"prompts": 1, "skipped": {HOSTILE: 1}},
        "samples": counts,
        "prompts": {"with_pairs": 1},
        "pairs": {"kept": 1, "prompts_with_pairs": 1},
        "dropped": {"prompts": {"no_gap": 0}, "pairs_by_length_balance": 0},
        "examples": [
            {
                "id": HOSTILE,
                "prompt": HOSTILE,
                "chosen": HOSTILE,
                "rejected": HOSTILE,
                "chosen_segments": [[2, 10]],
                "rejected_segments": [[2, 10]],
                "chosen_hallucinations": 0,
                "rejected_hallucinations": 1,
                "hallucinated": [HOSTILE],
            }
        ],
    }
    html = render(render_markdown(report))
    assert_text_only(html)
    assert (
        html.count("&lt;script&gt;") >= 9
    )  # model, annotator (2), unusable, skipped, id, prompt, chosen, rejected


def test_eval_tables_show_run_and_metric_names_as_text() -> None:
    """Run names come from folder names or --names, metric names from the metrics files compared."""
    runs = [(HOSTILE, {"benchmark": "pope", HOSTILE: 0.5}), ("base", {"benchmark": "pope", HOSTILE: 0.25})]
    assert_text_only(render(compare_table(runs)))
    assert_text_only(render(metrics_table({HOSTILE: 0.5}, title=HOSTILE)))


def test_demo_report_examples_show_captions_as_text() -> None:
    """The demo report quotes model captions; a caption with a backtick can no longer end a code span."""
    from chip.demo.report import example_lines

    html = render("\n".join(example_lines({"chip": [{"truth": HOSTILE, "greedy": HOSTILE}]})))
    assert_text_only(html)


SECRET = "sk-chip-test-0123456789abcdef"


def test_judge_api_key_is_sent_but_never_written(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog
) -> None:
    """`chip eval --bench mmhal` judged by a real HTTP server on 127.0.0.1 with the key in
    ``$CHIP_JUDGE_API_KEY``: the server receives ``Authorization: Bearer KEY``; neither the results
    JSON, the Markdown table, stdout, stderr nor any log record holds it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from chip.cli import main as chip_main

    seen: list[str] = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Authorization", ""))
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Rating: 5"}}]}
            payload = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CHIP_JUDGE_API_KEY", SECRET)
    caplog.set_level("DEBUG")
    questions, answers = tmp_path / "mmhal.json", tmp_path / "answers.jsonl"
    row = {
        "question_type": "attribute",
        "question": "What colour?",
        "gt_answer": "Red.",
        "image_content": ["box"],
    }
    questions.write_text(json.dumps([row, row]))
    answers.write_text("".join(json.dumps({"question_id": i, "answer": "Red."}) + "\n" for i in range(2)))
    out = tmp_path / "results"
    argv = ["eval", "--bench", "mmhal", "--answers", str(answers), "--questions", str(questions)]
    argv += [
        "--judge-url",
        f"http://127.0.0.1:{server.server_address[1]}/v1",
        "--output",
        str(out / "mmhal.json"),
    ]
    argv += ["--markdown", str(out / "mmhal.md")]
    try:
        assert chip_main(argv) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert seen and set(seen) == {f"Bearer {SECRET}"}
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err + caplog.text
    written = sorted(path.name for path in out.iterdir())
    assert written == ["mmhal.json", "mmhal.md"]
    assert not [name for name in written if SECRET.encode() in (out / name).read_bytes()]
