"""Images in chat data: both spellings, and every hostile image ending in a StudioError naming the row and the file."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from helpers import REPO, write_jsonl
from PIL import Image

from studio.cli import main
from studio.config.schema import DataSpec
from studio.data import load_examples
from studio.data.images import MAX_DECODE_PIXELS, load_image, message_images
from studio.errors import StudioError

SHAPES = REPO / "examples" / "shapes"


def spec(path: Path, **extra) -> DataSpec:
    return DataSpec(path=str(path), **extra)


def image_row(image: str, question: str = "What is it?", answer: str = "A red circle.") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": answer}]}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in a few dozen bytes (its pixel data is absent)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "imgs" / "ok.png")
    return tmp_path


def fails(folder: Path, image: str, *words: str) -> StudioError:
    """Load a one-row dataset naming `image`; assert the StudioError names the row and holds `words`."""
    data = write_jsonl(folder / "train.jsonl", [image_row("imgs/ok.png"), image_row(image)])
    with pytest.raises(StudioError) as caught:
        load_examples(str(data), spec(data))
    text = caught.value.format()
    assert f"{data}:2" in text  # the row
    for word in words:
        assert word in text, text
    return caught.value


def test_both_spellings_parse_to_the_same_messages():
    _, parts = load_examples(str(SHAPES / "train.jsonl"), spec(SHAPES / "train.jsonl"))
    _, llava = load_examples(str(SHAPES / "train_llava.jsonl"), spec(SHAPES / "train_llava.jsonl"))
    assert len(parts) == len(llava) == 24
    assert [e.messages for e in parts] == [e.messages for e in llava]
    first = parts[0].messages
    assert first[0]["content"][0] == {"type": "image", "image": str((SHAPES / "imgs" / "0001.png").resolve())}
    assert first[0]["content"][1]["type"] == "text" and first[1] == {"role": "assistant", "content": json.loads((SHAPES / "train.jsonl").read_text().splitlines()[0])["messages"][1]["content"]}


def test_llava_placeholders_must_match_the_images(folder):
    row = {"conversations": [{"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "Yes."}], "images": ["imgs/ok.png"]}
    data = write_jsonl(folder / "train.jsonl", [row])
    with pytest.raises(StudioError, match="2 <image> placeholder"):
        load_examples(str(data), spec(data))


def test_missing_file(folder):
    fails(folder, "imgs/nope.png", "not found", "nope.png")


def test_truncated_png(folder):
    whole = (folder / "imgs" / "ok.png").read_bytes()
    Image.new("RGB", (64, 64), (0, 90, 200)).save(folder / "imgs" / "big.png")
    (folder / "imgs" / "cut.png").write_bytes((folder / "imgs" / "big.png").read_bytes()[:-30])
    assert len(whole) > 30
    fails(folder, "imgs/cut.png", "cannot be read", "cut.png")


def test_not_an_image(folder):
    (folder / "imgs" / "notes.png").write_text("hello")
    fails(folder, "imgs/notes.png", "cannot be read", "notes.png")


@pytest.mark.parametrize("side", [9000, 100_000])  # above the studio's limit; far above Pillow's own bomb limit
def test_huge_dimensions_refused_before_decoding(folder, side):
    (folder / "imgs" / "bomb.png").write_bytes(png_header(side, side))
    assert (folder / "imgs" / "bomb.png").stat().st_size < 100
    error = fails(folder, "imgs/bomb.png", "bomb.png")
    assert "too large" in error.what or f"{side}x{side}" in error.what
    assert side * side > MAX_DECODE_PIXELS


def test_sixteen_bit_image_refused(folder):
    Image.new("I;16", (20, 20), 40000).save(folder / "imgs" / "deep.png")
    fails(folder, "imgs/deep.png", "16-bit", "deep.png", "8-bit")


def test_eight_bit_modes_become_rgb_with_transparency_on_white(folder):
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    clear.putpixel((0, 0), (0, 0, 255, 255))
    clear.save(folder / "imgs" / "alpha.png")
    Image.new("L", (10, 10), 128).save(folder / "imgs" / "grey.png")
    Image.new("P", (10, 10), 3).save(folder / "imgs" / "palette.png")
    alpha = load_image(folder / "imgs" / "alpha.png", "row", 10**6)
    assert alpha.mode == "RGB" and alpha.getpixel((5, 5)) == (255, 255, 255) and alpha.getpixel((0, 0)) == (0, 0, 255)
    assert load_image(folder / "imgs" / "grey.png", "row", 10**6).getpixel((1, 1)) == (128, 128, 128)
    assert load_image(folder / "imgs" / "palette.png", "row", 10**6).mode == "RGB"


def test_image_max_pixels_downscales_keeping_the_aspect_ratio(folder):
    Image.new("RGB", (400, 100), "green").save(folder / "imgs" / "wide.png")
    image = load_image(folder / "imgs" / "wide.png", "row", 10_000)
    assert image.size == (200, 50)
    assert load_image(folder / "imgs" / "ok.png", "row", 10_000).size == (40, 30)  # small enough already


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://10.0.0.1/x.jpg", "file:///etc/passwd", "data:image/png;base64,AAAA"])
def test_urls_are_refused(folder, url):
    fails(folder, url, "URL", "fetches nothing")


def test_paths_may_not_leave_the_dataset_folder(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    Image.new("RGB", (8, 8)).save(outside / "secret.png")
    fails(folder, "../" + outside.name + "/secret.png", "outside the dataset's folder")
    fails(folder, str(outside / "secret.png"), "outside the dataset's folder")
    (folder / "imgs" / "link.png").symlink_to(outside / "secret.png")
    fails(folder, "imgs/link.png", "outside the dataset's folder")


def test_image_in_an_assistant_turn_is_refused(folder):
    row = image_row("imgs/ok.png")
    row["messages"][1]["content"] = [{"type": "image", "image": "imgs/ok.png"}]
    data = write_jsonl(folder / "train.jsonl", [row])
    with pytest.raises(StudioError, match="assistant"):
        load_examples(str(data), spec(data))


def test_malformed_parts(folder):
    row = image_row("imgs/ok.png")
    row["messages"][0]["content"].append({"type": "audio", "audio": "a.wav"})
    data = write_jsonl(folder / "train.jsonl", [row])
    with pytest.raises(StudioError, match="not a text or image part"):
        load_examples(str(data), spec(data))


def test_images_refused_for_preference_rows(folder):
    data = write_jsonl(folder / "train.jsonl", [{"prompt": [image_row("imgs/ok.png")["messages"][0]], "chosen": "A", "rejected": "B"}])
    with pytest.raises(StudioError, match="content parts"):
        load_examples(str(data), spec(data))


def test_message_images_in_order(folder):
    row = {"messages": [{"role": "user", "content": "<image> and <image>?"}, {"role": "assistant", "content": "Two."}], "images": ["imgs/ok.png", "imgs/ok.png"]}
    data = write_jsonl(folder / "train.jsonl", [row])
    _, (example,) = load_examples(str(data), spec(data))
    assert message_images(example.messages) == [str(folder.resolve() / "imgs" / "ok.png")] * 2
    assert [p["type"] for p in example.messages[0]["content"]] == ["image", "text", "image", "text"]


def test_studio_validate_reports_a_broken_image(folder, capsys):
    (folder / "imgs" / "cut.png").write_bytes((folder / "imgs" / "ok.png").read_bytes()[:40])
    data = write_jsonl(folder / "train.jsonl", [image_row("imgs/cut.png")])
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"method: lora\ndata:\n  path: {data}\n", encoding="utf-8")
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "cut.png" in err and f"{data}:1" in err and "Traceback" not in err
