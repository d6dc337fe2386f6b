"""Datasets whose images are data (a saved `Image` feature) or an imagefolder, read into the parts spelling."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from studio.config.schema import DataSpec
from studio.data import load_examples, read_rows
from studio.data.images import message_images
from studio.errors import StudioError

RED, BLUE = (200, 10, 10), (10, 20, 230)
TEXT_CHAT = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})  # messages with text content


def picture(colour: tuple[int, int, int], size=(6, 4)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    image.putpixel((0, 0), (1, 2, 3))  # not uniform, so a wrong crop or channel order shows
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def chat(question: str, answer: str = "A colour.", system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def save(folder: Path, columns: dict, features: dict | None = None) -> Path:
    """A saved dataset of `columns`; images given as PIL images or {"bytes", "path"} are embedded by datasets."""
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features) if features else None)
    dataset.save_to_disk(str(folder))
    return folder


def load(folder: Path):
    return load_examples(str(folder), DataSpec(path=str(folder)))[1]


def pixels(image: str | Path | Image.Image) -> bytes:
    """The RGB pixels of an image file (or an image)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB").tobytes()
    with Image.open(image) as opened:
        return opened.convert("RGB").tobytes()


def refused(folder: Path, *words: str) -> str:
    with pytest.raises(StudioError) as caught:
        load(folder)
    text = caught.value.format()
    for word in words:
        assert word in text, text
    return text


def test_llava_images_column_fills_placeholders_with_files_inside_the_folder(tmp_path):
    red, blue = picture(RED), picture(BLUE)
    folder = save(tmp_path / "ds", {
        "messages": [chat("<image>\nWhat colour?"), chat("Compare <image> with <image>.")],
        "images": [[red], [blue, red]],
    }, {"messages": TEXT_CHAT, "images": datasets.List(datasets.Image())})
    first, second = load(folder)
    assert first.messages[0]["content"] == [{"type": "image", "image": first.messages[0]["content"][0]["image"]}, {"type": "text", "text": "What colour?"}]
    assert [p["type"] for p in second.messages[0]["content"]] == ["text", "image", "text", "image", "text"]
    paths = message_images(first.messages) + message_images(second.messages)
    root = folder.resolve()
    for path, original in zip(paths, (red, blue, red)):
        path = Path(path)
        assert path.parent == root / "images" and path.is_file()
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()[:20] and path.suffix == ".png"
        assert pixels(path) == pixels(original)
    assert paths[0] == paths[2]  # the same picture is one file
    assert len(list((root / "images").iterdir())) == 2


def test_reading_twice_writes_nothing_new(tmp_path):
    folder = save(tmp_path / "ds", {"messages": [chat("<image> what?")], "images": [[picture(RED)]]},
                  {"messages": TEXT_CHAT, "images": datasets.List(datasets.Image())})
    load(folder)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (folder / "images").iterdir()}
    assert len(before) == 1
    load(folder)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (folder / "images").iterdir()} == before
    assert sorted(p.name for p in folder.iterdir()) == ["data-00000-of-00001.arrow", "dataset_info.json", "images", "state.json"]  # no cache file either


def test_reading_decodes_no_pixels(tmp_path, monkeypatch):
    folder = save(tmp_path / "ds", {"messages": [chat("what?")], "image": [picture(RED)]})

    def never(*_):
        raise AssertionError("pixels decoded while reading rows")

    monkeypatch.setattr(Image.Image, "load", never)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", never)
    (row,) = read_rows(folder)
    assert row.data["messages"][0]["content"][0]["image"].startswith("images/")


def test_jpeg_bytes_get_their_format_from_the_header_not_the_name(tmp_path):
    jpeg = png_bytes(picture(RED, (16, 16)), "JPEG")
    folder = save(tmp_path / "ds", {"messages": [chat("what?")], "image": [{"bytes": jpeg, "path": "looks-like.png"}]}, {"messages": TEXT_CHAT, "image": datasets.Image()})
    (example,) = load(folder)
    (path,) = message_images(example.messages)
    assert Path(path).suffix == ".jpg" and Path(path).read_bytes() == jpeg


def test_one_image_without_placeholder_goes_before_the_first_user_text(tmp_path):
    folder = save(tmp_path / "ds", {"conversations": [[{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Red."}]],
                                    "image": [picture(RED)]})
    (example,) = load(folder)
    system, user, assistant = example.messages
    assert system == {"role": "system", "content": "Be brief."} and assistant == {"role": "assistant", "content": "Red."}
    assert [p["type"] for p in user["content"]] == ["image", "text"] and user["content"][1]["text"] == "What colour?"
    assert pixels(user["content"][0]["image"]) == pixels(picture(RED))


def test_image_parts_without_a_file_are_filled_in_order(tmp_path):
    """llava-instruct-mix-vsft's spelling: parts {"type": "image"} (Arrow gives every part every key, None when unused)."""
    def parts(*kinds):
        return [{"type": k, "text": None if k == "image" else "Which?", "index": 0 if k == "image" else None} for k in kinds]

    folder = save(tmp_path / "ds", {"messages": [[{"role": "user", "content": parts("text", "image", "image")}, {"role": "assistant", "content": parts("text")}]],
                                    "images": [[picture(RED), picture(BLUE)]]})
    (example,) = load(folder)
    user = example.messages[0]["content"]
    assert [p["type"] for p in user] == ["text", "image", "image"]
    assert [pixels(p["image"]) for p in user[1:]] == [pixels(picture(RED)), pixels(picture(BLUE))]


def test_the_cauldron_texts_and_question_answer_rows(tmp_path):
    cauldron = save(tmp_path / "cauldron", {"texts": [[{"user": "Colour?", "assistant": "Red.", "source": "x"}, {"user": "Sure?", "assistant": "Yes."}]],
                                            "images": [[picture(RED)]]})
    (example,) = load(cauldron)
    assert [m["role"] for m in example.messages] == ["user", "assistant", "user", "assistant"]
    assert [p["type"] for p in example.messages[0]["content"]] == ["image", "text"] and example.messages[2]["content"] == "Sure?"
    vqa = save(tmp_path / "vqa", {"question": ["Colour?"], "answer": ["Blue."], "image": [picture(BLUE)]})
    (example,) = load(vqa)  # trained as prompt/completion: GRPO's question/answer rows take no images
    assert example.messages[1] == {"role": "assistant", "content": "Blue."}
    assert example.messages[0]["content"][1] == {"type": "text", "text": "Colour?"}


def path_only(monkeypatch):
    """Save Image columns as paths, as older datasets versions and hand-written tables do (save_to_disk now embeds)."""
    monkeypatch.setattr(datasets.arrow_writer, "embed_table_storage", lambda table, **_: table)


def test_a_path_inside_the_folder_is_used_as_is(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    (folder / "pics").mkdir(parents=True)
    picture(BLUE).save(folder / "pics" / "a.png")
    path_only(monkeypatch)
    save(folder, {"messages": [chat("<image>")], "image": [str(folder / "pics" / "a.png")]}, {"messages": TEXT_CHAT, "image": datasets.Image()})
    assert read_rows(folder)[0].data["messages"][0]["content"] == [{"type": "image", "image": "pics/a.png"}]
    (example,) = load(folder)
    assert message_images(example.messages) == [str((folder / "pics" / "a.png").resolve())]
    assert not (folder / "images").exists()


def test_a_path_outside_the_folder_is_refused(tmp_path, monkeypatch):
    picture(BLUE).save(tmp_path / "secret.png")
    path_only(monkeypatch)
    folder = save(tmp_path / "ds", {"messages": [chat("<image>")], "image": [str(tmp_path / "secret.png")]}, {"messages": TEXT_CHAT, "image": datasets.Image()})
    refused(folder, "outside the dataset's folder", f"{folder} [row 0]")


def test_an_image_with_no_place_is_refused(tmp_path):
    text_only = save(tmp_path / "text", {"text": ["a caption"], "image": [picture(RED)]})
    refused(text_only, "no text column to put them in", f"{text_only} [row 0]", "question")
    miscounted = save(tmp_path / "count", {"messages": [chat("ok"), chat("<image> and <image>")], "images": [[picture(RED)], [picture(BLUE)]]})
    refused(miscounted, "2 image placeholder(s)", "1 image(s)", f"{miscounted} [row 1]")
    no_user = save(tmp_path / "nouser", {"messages": [[{"role": "assistant", "content": "Red."}]], "image": [picture(RED)]})
    refused(no_user, "no user turn", f"{no_user} [row 0]")


def test_an_image_column_of_another_name_is_refused(tmp_path):
    folder = save(tmp_path / "ds", {"messages": [chat("what?")], "photo": [picture(RED)]})
    refused(folder, "['photo']", "rename_column")


def test_a_broken_image_is_refused_with_its_row(tmp_path):
    good = png_bytes(picture(RED, (32, 32)))
    broken = good[: len(good) - 30]  # the header reads, the pixels do not
    folder = save(tmp_path / "ds", {"messages": [chat("<image>"), chat("<image>")], "image": [{"bytes": good, "path": None}, {"bytes": broken, "path": None}]},
                  {"messages": TEXT_CHAT, "image": datasets.Image()})
    refused(folder, f"{folder} [row 1]", "cannot be read")
    garbage = save(tmp_path / "garbage", {"messages": [chat("<image>")], "image": [{"bytes": b"not an image", "path": "x.png"}]},
                   {"messages": TEXT_CHAT, "image": datasets.Image()})
    refused(garbage, f"{garbage} [row 0]", "not an image Pillow can read")


def test_an_unwritable_images_folder_is_refused(tmp_path):
    folder = save(tmp_path / "ds", {"messages": [chat("what?")], "image": [picture(RED)]})
    (folder / "images").write_text("a file where the folder goes")  # blocks the write even for root
    refused(folder, "cannot write the dataset's embedded images", str(folder / "images"), "writable")


def imagefolder(folder: Path, metadata: str, text: str) -> Path:
    (folder / "sub").mkdir(parents=True)
    picture(RED).save(folder / "a.png")
    picture(BLUE).save(folder / "sub" / "b.png")
    (folder / metadata).write_text(text)
    return folder


def test_imagefolder_with_question_answer_metadata(tmp_path):
    rows = [{"file_name": "a.png", "question": "Colour?", "answer": "Red."}, {"file_name": "sub/b.png", "question": "And this?", "answer": "Blue."}]
    folder = imagefolder(tmp_path / "ds", "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    first, second = load(folder)
    assert first.where == f"{folder / 'metadata.jsonl'}:1"
    assert first.messages[0]["content"] == [{"type": "image", "image": str((folder / "a.png").resolve())}, {"type": "text", "text": "Colour?"}]
    assert message_images(second.messages) == [str((folder / "sub" / "b.png").resolve())] and second.messages[1]["content"] == "Blue."
    assert not (folder / "images").exists()  # files on disk are used as they are


def test_imagefolder_csv_with_prompt_completion_and_messages_jsonl(tmp_path):
    folder = imagefolder(tmp_path / "csv", "metadata.csv", "file_name,prompt,completion\nsub/b.png,Colour?,Blue.\n")
    (example,) = load(folder)
    assert pixels(message_images(example.messages)[0]) == pixels(picture(BLUE))
    row = {"file_names": ["a.png", "sub/b.png"], "messages": chat("Left <image>, right <image>?")}
    folder = imagefolder(tmp_path / "chat", "metadata.jsonl", json.dumps(row) + "\n")
    (example,) = load(folder)
    assert [p.get("text") for p in example.messages[0]["content"]] == ["Left ", None, ", right ", None, "?"]


def test_imagefolder_file_outside_the_folder_is_refused(tmp_path):
    picture(RED).save(tmp_path / "outside.png")
    folder = imagefolder(tmp_path / "ds", "metadata.jsonl", json.dumps({"file_name": "../outside.png", "question": "q", "answer": "a"}) + "\n")
    refused(folder, "outside the dataset's folder", f"{folder / 'metadata.jsonl'}:1")
    missing = imagefolder(tmp_path / "nofile", "metadata.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n")
    refused(missing, "`file_name`", f"{missing / 'metadata.jsonl'}:1")
