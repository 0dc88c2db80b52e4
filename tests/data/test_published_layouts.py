"""Published preference datasets are read as they are downloaded: their columns, files and folders.

Each fixture rebuilds a real layout in miniature (the column names and types of the dataset card,
images as PNG bytes made with Pillow, the hub's file naming); nothing is downloaded. The hub is
replaced by a fake `datasets.load_dataset` where a hub id is tested.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub
import pytest
from PIL import Image

from chip.cli import main as chip_main
from chip.data import load_preference_rows, parse_column_map
from chip.errors import DataError

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 20), (120, 120, 120)]
QUESTIONS = ["What colour is it?", "Describe the image.", "Is it bright?", "What is shown?", "Any animals?"]


def png(k: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), COLOURS[k % len(COLOURS)]).save(buffer, "PNG")
    return buffer.getvalue()


def pair(k: int) -> tuple[str, str]:
    return f"A plain square, colour {k}.", f"A square with a dog, colour {k + 1}."


def rlaif_v_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """openbmb/RLAIF-V-Dataset: image = {bytes, path}; image_path points at the authors' disk."""
    rows = []
    for k in range(start, start + n):
        chosen, rejected = pair(k)
        rows.append(
            {
                "ds_name": "RLAIF-V",
                "image": {"bytes": png(k), "path": None},
                "question": QUESTIONS[k % len(QUESTIONS)],
                "chosen": chosen,
                "rejected": rejected,
                "origin_dataset": "VQAv2",
                "origin_split": json.dumps({"model": "llava15_7b", "type": "qa"}),
                "idx": str(k),
                "image_path": f"RLAIF-V-Dataset/{k}.jpg",
            }
        )
    return rows


def rlhf_v_rows(n: int) -> list[dict[str, Any]]:
    """openbmb/RLHF-V-Dataset: `text` is a JSON string with question/chosen/rejected."""
    rows = []
    for k in range(n):
        chosen, rejected = pair(k)
        text = {"question": QUESTIONS[k % 5], "chosen": chosen, "rejected": rejected}
        rows.append(
            {
                "ds_name": "RLHF-V",
                "image": {"bytes": png(k), "path": None},
                "text": json.dumps(text),
                "origin_dataset": "LLaVA",
                "origin_split": "{}",
                "idx": k,
                "image_path": f"llava/{k}.jpg",
            }
        )
    return rows


def trl_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """HuggingFaceH4/rlaif-v_formatted (TRL): `images` list, prompt/chosen/rejected as messages."""
    rows = []
    for k in range(start, start + n):
        chosen, rejected = pair(k)
        question = [{"type": "image", "text": None}, {"type": "text", "text": QUESTIONS[k % 5]}]
        rows.append(
            {
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
                "images": [{"bytes": png(k), "path": None}],
                "prompt": [{"role": "user", "content": question}],
            }
        )
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write as the hub does: through `datasets`, with the `Image` feature's {bytes, path} struct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_list(rows)
    if "image" in dataset.features and isinstance(rows[0]["image"], dict):
        dataset = dataset.cast_column("image", datasets.Image())
    if "images" in dataset.features and isinstance(rows[0]["images"][0], dict):
        dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image()))
    dataset.to_parquet(str(path))
    return path


def check(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop the progress bars of building the fixtures
    status = chip_main(["data", "check", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_rlaif_v_shards_are_read_as_published(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "rlaif-v"
    write_parquet(folder / "RLAIF-V-Dataset_000.parquet", rlaif_v_rows(5))
    write_parquet(folder / "RLAIF-V-Dataset_001.parquet", rlaif_v_rows(3, start=5))
    (folder / "README.md").write_text("# card\n")
    (folder / ".cache" / "huggingface").mkdir(parents=True)

    examples, report = load_preference_rows(folder)
    assert report.total_rows == 8 and report.ok
    assert [ex.id for ex in examples] == [str(k) for k in range(8)]
    assert examples[0].prompt == QUESTIONS[0] and examples[0].chosen == pair(0)[0]
    assert examples[0].images[0].data == png(0) and examples[7].load_images()[0].size == (24, 24)

    status, out, _ = check(capsys, str(folder))
    assert status == 0
    assert out.splitlines()[0] == f"{folder}: 8 rows, 8 usable, 0 bad"
    assert "read: 2 .parquet file(s)" in out
    assert "layout: RLAIF-V (question, chosen, rejected, image)\n" in out
    assert (
        "columns: question→prompt, chosen, rejected, image (inline bytes; chosen over image_path), idx→id; "
        "unused: ds_name, origin_dataset, origin_split, image_path (change with --column_map COLUMN=FIELD)\n"
    ) in out


def test_rlaif_v_bad_rows_name_the_shard_and_the_stored_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = rlaif_v_rows(3, start=3)
    rows[1]["rejected"] = rows[1]["chosen"]
    rows[2]["question"] = None
    folder = tmp_path / "rlaif-v"
    write_parquet(folder / "RLAIF-V-Dataset_000.parquet", rlaif_v_rows(3))
    write_parquet(folder / "RLAIF-V-Dataset_001.parquet", rows)

    status, out, _ = check(capsys, str(folder))
    assert status == 1
    assert "row 4 (RLAIF-V-Dataset_001.parquet row 1), field 'rejected': is identical to chosen" in out
    assert "row 5 (RLAIF-V-Dataset_001.parquet row 2), field 'question': is missing" in out


def test_rlhf_v_file_and_its_download_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "rlhf-v"
    data = write_parquet(folder / "RLHF-V-Dataset.parquet", rlhf_v_rows(4))

    for path in (data, folder):
        examples, report = load_preference_rows(path)
        assert report.ok and [ex.id for ex in examples] == ["0", "1", "2", "3"]
        assert examples[1].prompt == QUESTIONS[1]
        assert report.mapping is not None and report.mapping.layout.startswith("RLHF-V")
    status, out, _ = check(capsys, str(folder))
    assert status == 0 and "layout: RLHF-V" in out and "columns: text, image (inline bytes" in out


def test_missing_recipe_file_says_how_to_download_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "data" / "rlhf-v" / "train.parquet"
    status, _, err = check(capsys, str(missing))
    assert status == 1 and err.count("\n") == 1
    assert "dataset not found" in err
    assert f"hf download openbmb/RLHF-V-Dataset --repo-type dataset --local-dir {missing.parent}" in err


def test_trl_hub_shards_read_one_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "rlaif-v_formatted"
    write_parquet(folder / "data" / "train-00000-of-00002.parquet", trl_rows(3))
    write_parquet(folder / "data" / "train-00001-of-00002.parquet", trl_rows(2, start=3))
    write_parquet(folder / "data" / "test-00000-of-00001.parquet", trl_rows(2, start=5))

    examples, report = load_preference_rows(folder)
    assert report.ok and report.total_rows == 5 and report.description == "split train, 2 .parquet file(s)"
    assert examples[0].prompt == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}]}
    ]
    assert examples[0].chosen == pair(0)[0] and examples[0].images[0].data == png(0)
    test_examples, _ = load_preference_rows(folder, split="test")
    assert [ex.chosen for ex in test_examples] == [pair(5)[0], pair(6)[0]]

    status, out, _ = check(capsys, str(folder), "--split", "test")
    assert status == 0 and "2 rows, 2 usable" in out and "TRL conversational" in out
    status, _, err = check(capsys, str(folder), "--split", "validation")
    assert status == 1 and "has no split 'validation'; its splits are test, train" in err


def test_trl_string_columns_in_jsonl_shards_with_image_paths(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    (folder / "img").mkdir(parents=True)
    for shard in range(2):
        lines = []
        for k in range(3 * shard, 3 * shard + 3):
            Image.open(io.BytesIO(png(k))).save(folder / "img" / f"{k}.png")
            chosen, rejected = pair(k)
            row = {
                "images": [f"img/{k}.png"],
                "prompt": QUESTIONS[k % 5],
                "chosen": chosen,
                "rejected": rejected,
            }
            lines.append(json.dumps(row))
        lines.insert(1, "")
        (folder / f"part-{shard}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "part-1.jsonl").write_text((folder / "part-1.jsonl").read_text() + '{"broken\n')

    examples, report = load_preference_rows(folder, on_bad_row="skip")
    assert len(examples) == 6 and report.total_rows == 7
    (bad,) = report.bad_rows
    assert str(bad).startswith("row 6 (part-1.jsonl line 5), field 'row': invalid JSON")
    assert examples[4].images[0].path == (folder / "img" / "4.png").resolve()
    assert examples[4].shard == "part-1.jsonl line 3"
    assert report.mapping is not None and report.mapping.renames == ()


def test_dataset_dict_folder_of_rlaif_v(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    features = datasets.Dataset.from_list(rlaif_v_rows(1)).cast_column("image", datasets.Image()).features
    dataset_dict = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rlaif_v_rows(4), features=features),
            "val": datasets.Dataset.from_list(rlaif_v_rows(2, start=4), features=features),
        }
    )
    dataset_dict.save_to_disk(str(tmp_path / "saved"))

    status, out, _ = check(capsys, str(tmp_path / "saved"))
    assert (
        status == 0 and "4 rows, 4 usable" in out and "read: split train" in out and "question→prompt" in out
    )
    examples, _ = load_preference_rows(tmp_path / "saved" / "val")
    assert [ex.id for ex in examples] == ["4", "5"]


def test_llava_conversations_json_array(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """POVID / LLaVA-RLHF style: a JSON array, `image` a path, the prompt in `conversations`."""
    (tmp_path / "coco").mkdir()
    rows = []
    for k in range(3):
        Image.open(io.BytesIO(png(k))).save(tmp_path / "coco" / f"{k}.png")
        chosen, rejected = pair(k)
        conversations = [
            {"from": "human", "value": f"<image>\n{QUESTIONS[k]}"},
            {"from": "gpt", "value": chosen},
        ]
        rows.append(
            {
                "id": k,
                "image": f"{k}.png",
                "conversations": conversations,
                "chosen": chosen,
                "rejected": rejected,
            }
        )
    data = tmp_path / "povid.json"
    data.write_text(json.dumps(rows, indent=1))

    status, out, _ = check(capsys, str(data), "--image_root", str(tmp_path / "coco"))
    assert status == 0 and "layout: LLaVA conversations" in out and "conversations" in out
    examples, _ = load_preference_rows(data, image_root=tmp_path / "coco")
    assert examples[2].prompt == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[2]}]}
    ]
    assert examples[2].chosen == pair(2)[0]


def test_conversations_with_preference_values(tmp_path: Path) -> None:
    """vision-feedback-mix-binarized: the pair is the last turn's `preference_values`."""
    rows = [
        {
            "id": k,
            "image": {"bytes": png(k), "path": None},
            "conversations": [
                {"from": "human", "value": QUESTIONS[k], "preference_values": None},
                {"from": "gpt", "value": None, "preference_values": list(pair(k))},
            ],
        }
        for k in range(3)
    ]
    data = write_parquet(tmp_path / "mix.parquet", rows)

    examples, report = load_preference_rows(data)
    assert report.ok and examples[1].rejected == pair(1)[1]
    assert examples[1].prompt == [{"role": "user", "content": [{"type": "text", "text": QUESTIONS[1]}]}]


def test_llava_rlhf_outputs_ranked_by_preference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """zhiqings/LLaVA-Human-Preference-10K: output_1/output_2 ({from, value}) and preference 1 or 2."""
    (tmp_path / "coco").mkdir()
    rows = []
    for k in range(4):
        Image.open(io.BytesIO(png(k))).save(tmp_path / "coco" / f"{k}.png")
        chosen, rejected = pair(k)
        outputs = [chosen, rejected] if k % 2 == 0 else [rejected, chosen]
        rows.append(
            {
                "id": f"q{k}",
                "image": f"{k}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is here?"},
                    {"from": "gpt", "value": "A square."},
                    {"from": "human", "value": QUESTIONS[k]},
                ],
                "output_1": {"from": "llava", "value": outputs[0]},
                "output_2": {"from": "llava", "value": outputs[1]},
                "preference": 1 if k % 2 == 0 else 2,
                "hallucination": False,
            }
        )
    rows[3]["preference"] = 0
    rows[2]["conversations"] = "What is here?"
    data = tmp_path / "llava_7b_v1_preference.json"
    data.write_text(json.dumps(rows))

    examples, report = load_preference_rows(data, image_root=tmp_path / "coco", on_bad_row="skip")
    assert [(ex.chosen, ex.rejected) for ex in examples] == [pair(0), pair(1)]
    assert [message["role"] for message in examples[1].prompt] == ["user", "assistant", "user"]
    assert [(bad.row, bad.field, bad.kind) for bad in report.bad_rows] == [
        (2, "conversations", "wrong_type"),
        (3, "preference", "bad_preference"),
    ]
    status, out, _ = check(capsys, str(data), "--image_root", str(tmp_path / "coco"))
    assert status == 1 and "layout: LLaVA-RLHF (output_1/output_2 ranked by preference)" in out
    assert "row 3, field 'preference': expected 1 or 2 (the preferred output), got 0" in out
    assert "unused: hallucination" in out


def test_image_column_that_works_is_chosen(tmp_path: Path) -> None:
    """`image` names files that are not there, `image_path` names files that are: use image_path."""
    (tmp_path / "img").mkdir()
    rows = []
    for k in range(2):
        Image.open(io.BytesIO(png(k))).save(tmp_path / "img" / f"{k}.png")
        chosen, rejected = pair(k)
        rows.append(
            {
                "image": f"elsewhere/{k}.jpg",
                "image_path": f"img/{k}.png",
                "query": "Q?",
                "chosen": chosen,
                "rejected": rejected,
            }
        )
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    examples, report = load_preference_rows(data)
    assert report.ok and examples[1].images[0].path == (tmp_path / "img" / "1.png").resolve()
    assert report.mapping is not None
    assert "image_path→image (paths; chosen over image)" in report.mapping.describe()
    assert "query→prompt" in report.mapping.describe()


def test_unmappable_schema_is_one_line_then_mapped_with_column_map(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [
        {"q": QUESTIONS[k], "good": pair(k)[0], "bad": pair(k)[1], "picture": {"bytes": png(k), "path": None}}
        for k in range(3)
    ]
    data = write_parquet(tmp_path / "custom.parquet", rows)

    status, out, err = check(capsys, str(data))
    assert status == 1 and out == "" and err.count("\n") == 1
    assert (
        f"{data}: no column for prompt, chosen, rejected, images; columns found: q, good, bad, picture" in err
    )
    assert "--column_map COLUMN=FIELD" in err

    status, out, _ = check(
        capsys,
        str(data),
        "--column_map",
        "q=prompt,good=chosen",
        "--column_map",
        "bad=rejected,picture=image",
    )
    assert status == 0 and "3 rows, 3 usable" in out
    assert "layout: custom (--column_map)\ncolumns: q→prompt, good→chosen, bad→rejected, picture→image" in out
    examples, _ = load_preference_rows(
        data, column_map={"q": "prompt", "good": "chosen", "bad": "rejected", "picture": "image"}
    )
    assert examples[2].prompt == QUESTIONS[2]


def test_override_beats_a_recognised_column(tmp_path: Path) -> None:
    rows = rlaif_v_rows(2)
    for row in rows:
        row["short_question"] = "Colour?"
    data = write_parquet(tmp_path / "rlaif.parquet", rows)

    examples, report = load_preference_rows(data, column_map="short_question=prompt")
    assert [ex.prompt for ex in examples] == ["Colour?", "Colour?"]
    assert report.mapping is not None and "question" in report.mapping.describe().split("unused: ")[1]


def test_image_override_replaces_both_standard_image_columns(tmp_path: Path) -> None:
    rows = [{**row, "images": ["missing.png"]} for row in rlaif_v_rows(2)]
    for row in rows:
        row["thumb"] = row.pop("image")
    data = write_parquet(tmp_path / "rows.parquet", rows)

    examples, report = load_preference_rows(data, column_map="thumb=image")
    assert report.ok and examples[0].images[0].data == png(0)
    assert report.mapping is not None
    assert "thumb→image (inline bytes)" in report.mapping.describe()
    assert "images" in report.mapping.describe().split("unused: ")[1]


@pytest.mark.parametrize(
    ("column_map", "fragment"),
    [
        ("nope=prompt", "--column_map names 'nope', which is not a column; columns found: ds_name, image"),
        ("question=answer", "unknown field 'answer'; fields are prompt, chosen"),
        ("question", "'question' is not COLUMN=FIELD"),
        ("question=prompt,ds_name=prompt", "maps several columns to prompt"),
    ],
)
def test_bad_column_map_is_one_line(
    column_map: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = write_parquet(tmp_path / "rlaif.parquet", rlaif_v_rows(1))
    status, _, err = check(capsys, str(data), "--column_map", column_map)
    assert status == 1 and err.count("\n") == 1 and fragment in err


def test_parse_column_map_forms() -> None:
    expected = {"question": "prompt", "img": "image"}
    assert parse_column_map("question=prompt, img=image") == expected
    assert parse_column_map(["question=prompt", "img=image"]) == expected
    assert parse_column_map(expected) == expected
    assert parse_column_map(None) == {}


def fake_hub(tmp_path: Path) -> datasets.DatasetDict:
    features = datasets.Dataset.from_list(rlaif_v_rows(1)).cast_column("image", datasets.Image()).features
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rlaif_v_rows(3), features=features)})


def test_hub_id_is_loaded_with_load_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def load_dataset(name: str, config: str | None = None, split: str | None = None, **kwargs: Any) -> Any:
        calls.append((name, config, split, kwargs))
        return fake_hub(tmp_path)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, name, **kwargs: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    status, out, _ = check(capsys, "openbmb/RLAIF-V-Dataset")
    assert status == 0 and calls == [("openbmb/RLAIF-V-Dataset", None, None, {})]
    assert out.splitlines()[0] == "openbmb/RLAIF-V-Dataset: 3 rows, 3 usable, 0 bad"
    assert "read: split train" in out and "question→prompt" in out


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        (
            "openbmb/RLAIF-V-Dataset",
            ConnectionError("[Errno -2] Name or service not known"),
            "cannot reach the Hugging Face hub for 'openbmb/RLAIF-V-Dataset' (offline?): download it with "
            "`hf download openbmb/RLAIF-V-Dataset --repo-type dataset --local-dir data/rlaif-v-dataset`",
        ),
        (
            "openbmb/RLAIF-V-Datasets",
            datasets.exceptions.DatasetNotFoundError("Dataset 'openbmb/RLAIF-V-Datasets' doesn't exist"),
            "no dataset 'openbmb/RLAIF-V-Datasets' on the Hugging Face hub, or it is gated/private",
        ),
    ],
    ids=["offline", "not_found"],
)
@pytest.mark.parametrize("failing", ["lookup", "load_dataset"])
def test_hub_failure_is_one_line_with_the_fix(
    name: str,
    error: Exception,
    fragment: str,
    failing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.chdir(tmp_path)
    lookup = fail if failing == "lookup" else (lambda self, name, **kwargs: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lookup)
    monkeypatch.setattr(datasets, "load_dataset", fail)
    status, _, err = check(capsys, name)
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"chip: error: {name}: no such local file or folder; ") and fragment in err


def test_relative_path_under_an_existing_folder_is_local_not_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    status, _, err = check(capsys, "data/rlaif-v")
    assert status == 1 and err.startswith(
        "chip: error: dataset not found: data/rlaif-v (download openbmb/RLAIF-V"
    )


def test_load_dataset_spec_on_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`name=parquet,data_files=...` runs the real `load_dataset` on local shards (no network)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    write_parquet(tmp_path / "shards" / "a.parquet", rlaif_v_rows(2))
    write_parquet(tmp_path / "shards" / "b.parquet", rlaif_v_rows(2, start=2))
    pattern = str(tmp_path / "shards" / "*.parquet")

    for spec in (
        f"name=parquet,data_files={pattern},split=train",
        json.dumps({"name": "parquet", "data_files": pattern}),
        {"name": "parquet", "data_files": [str(tmp_path / "shards" / "a.parquet")], "split": "train"},
    ):
        examples, report = load_preference_rows(spec)
        assert report.ok and len(examples) == (2 if isinstance(spec, dict) else 4)
        assert report.mapping is not None and "question→prompt" in report.mapping.describe()

    with pytest.raises(DataError, match=r"unknown key\(s\) streaming; keys are name, config"):
        load_preference_rows("name=parquet,streaming=true")


def test_plain_folder_of_images_is_still_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    status, _, err = check(capsys, str(tmp_path / "img"))
    assert status == 1 and err.count("\n") == 1
    assert "not a `datasets` folder" in err and "holds no .json, .jsonl, .parquet files" in err


def write_povid(folder: Path, n: int) -> Path:
    (folder / "coco").mkdir(parents=True)
    rows = []
    for k in range(n):
        Image.open(io.BytesIO(png(k))).save(folder / "coco" / f"{k}.png")
        chosen, rejected = pair(k)
        conversations = [
            {"from": "human", "value": f"<image>\n{QUESTIONS[k % 5]}"},
            {"from": "gpt", "value": chosen},
        ]
        rows.append(
            {
                "id": k,
                "image": f"coco/{k}.png",
                "conversations": conversations,
                "chosen": chosen,
                "rejected": rejected,
            }
        )
    (folder / "povid.json").write_text(json.dumps(rows))
    return folder / "povid.json"


LAYOUTS = {
    "rlaif_v_shards": lambda root: (
        write_parquet(root / "rlaif-v" / "RLAIF-V-Dataset_000.parquet", rlaif_v_rows(4)).parent
    ),
    "trl_hub_shards": lambda root: (
        write_parquet(root / "h4" / "data" / "train-00000-of-00001.parquet", trl_rows(4)).parent.parent
    ),
    "rlhf_v": lambda root: write_parquet(root / "rlhf-v" / "RLHF-V-Dataset.parquet", rlhf_v_rows(4)),
    "llava_conversations": lambda root: write_povid(root / "povid", 4),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_published_layout_trains(
    layout: str, tmp_path: Path, tiny_model: Any, capsys: pytest.CaptureFixture
) -> None:
    """`chip train` reads the layout as `chip data check` does and takes an optimiser step."""
    data = LAYOUTS[layout](tmp_path)
    assert check(capsys, str(data))[0] == 0
    out = tmp_path / "out"
    args = {
        "model_name_or_path": tiny_model("llava"),
        "dataset": data,
        "output_dir": out,
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    assert (
        chip_main(["train", *(item for key, value in args.items() for item in (f"--{key}", str(value)))]) == 0
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss" in entry and entry["loss"] > 0 for entry in history)


def test_rows_missing_a_field_without_unread_columns_report_it_per_row(tmp_path: Path) -> None:
    """Nothing could be mapped, so the usual row report says what is missing, row by row."""
    data = tmp_path / "ids.jsonl"
    data.write_text('{"id": 1}\n{"id": 2}\n')
    _, report = load_preference_rows(data, on_bad_row="skip")
    assert report.num_bad_rows == 2 and report.counts() == {"missing_field": 2}
