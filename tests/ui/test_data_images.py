"""The Data tab on vision-language data, for both tiny VLM architectures: the sample's image shown as an inline PNG
thumbnail of the very file, the trained tokens (the answer and its end token) highlighted, each run of image tokens
one compact mark that is never highlighted as trained, and the user's text and file names escaped."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import helpers
import pytest
from PIL import Image
from tiny_vlms import VLM_ARCHITECTURES, make_vlm_dir

from studio.config.load import load_recipe
from studio.data import IGNORE, load_examples
from studio.data.vision import VisionRenderer, image_token_ids
from studio.errors import StudioError
from studio.modeling.vision import load_processor
from studio.ui.tabs import data as data_tab
from studio.ui.tabs.data_images import THUMBNAIL_PX

SHAPES = helpers.REPO / "examples" / "shapes" / "train.jsonl"
ROWS = [json.loads(line) for line in SHAPES.read_text().splitlines()]


class _Sample(HTMLParser):
    """The img tags, and the text of the spans of each class (one entry per span), from the sample HTML."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[dict] = []
        self.spans: list[tuple[str, str]] = []  # (class, text) of the token view's spans
        self.open: list[str | None] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "span":
            self.open.append(attrs.get("class"))
            self.spans.append((attrs.get("class"), ""))

    def handle_endtag(self, tag):
        if tag == "span":
            self.open.pop()

    def handle_data(self, data):
        self.text += data
        if self.open and self.spans:
            cls, text = self.spans[-1]
            self.spans[-1] = (cls, text + data)


def parse(sample_html: str) -> _Sample:
    parsed = _Sample()
    parsed.feed(sample_html)
    return parsed


def body(parsed: _Sample) -> list[tuple[str, str]]:
    """The token view's spans after its legend (whose spans name the classes)."""
    return parsed.spans[3:]


@pytest.fixture(scope="module")
def vlms(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vlms")
    return {arch: make_vlm_dir(root / arch, arch) for arch in VLM_ARCHITECTURES}


def raw_for(model_dir, data_path, tmp_path, **data) -> dict:
    return load_recipe(helpers.recipe_dict(model_dir, data_path, tmp_path / "out", data={"max_length": 96, **data})).to_yaml_dict()


def decoded(uri: str) -> Image.Image:
    head, payload = uri.split(",", 1)
    assert head == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    assert image.format == "PNG"
    return image.convert("RGB")


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
@pytest.mark.parametrize("index", [0, 5])
def test_sample_shows_the_image_beside_the_highlighted_tokens(vlms, arch, index, tmp_path):
    raw = raw_for(vlms[arch], SHAPES, tmp_path)
    summary, warnings, sample, histogram = data_tab.inspect(str(SHAPES), "auto", "", raw, index)
    parsed = parse(sample)

    # The image: one inline PNG, pixel for pixel the row's file (48x48, below the thumbnail size).
    image_file = SHAPES.parent / ROWS[index]["messages"][0]["content"][0]["image"]
    assert [Path(img["alt"]).name for img in parsed.images] == [image_file.name]
    assert "src='data:image/png;base64," in sample
    shown = decoded(parsed.images[0]["src"])
    assert max(shown.size) <= THUMBNAIL_PX
    original = Image.open(image_file).convert("RGB")
    assert shown.size == original.size and shown.tobytes() == original.tobytes()
    assert f"image 1 · 48×48{image_file.relative_to(SHAPES.parent)}" in parsed.text

    # What training encodes for this row, to check the view against.
    recipe = load_recipe(raw)
    processor = load_processor(vlms[arch], recipe)
    _, examples = load_examples(str(SHAPES), recipe.data)
    encoded = VisionRenderer(processor, 96, "assistant", recipe.data.image_max_pixels).encode(examples[index])
    image_ids = image_token_ids(processor)
    tok = processor.tokenizer

    spans = body(parsed)
    trained = "".join(text for cls, text in spans if cls == "trained")
    answer = ROWS[index]["messages"][1]["content"]
    assert trained.strip() == answer
    assert sum(1 for cls, _ in spans if cls == "trained") == encoded.trained_tokens - 1  # all but the trained EOS
    assert spans[-1] == ("eos", tok.eos_token)

    # Image tokens: compact marks (one per run of one token), never trained, adding up to the row's image tokens.
    marks = [text for cls, text in spans if cls == "image-tokens"]
    runs = [(tid, len(list(group))) for tid, group in itertools.groupby(encoded.input_ids) if tid in image_ids]
    expected = [tok.decode([tid]) if n == 1 else tok.decode([tid])[:-1] + f" ×{n}>" for tid, n in runs]
    assert marks == expected and any(" ×" in m for m in marks)
    assert sum(n for _, n in runs) == sum(t in image_ids for t in encoded.input_ids) >= 4
    assert all(encoded.labels[i] == IGNORE for i, t in enumerate(encoded.input_ids) if t in image_ids)
    placeholder = tok.decode([max(image_ids, key=lambda t: encoded.input_ids.count(t))])
    assert html.escape(placeholder * 2) not in sample  # never the repeated tokens

    assert f"{len(encoded.input_ids)} tokens ({sum(t in image_ids for t in encoded.input_ids)} for 1 image(s)), {encoded.trained_tokens} trained" in summary
    assert "No warnings" in warnings and "<svg" in histogram and "max_length 96" in histogram


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_user_text_and_file_names_are_escaped(vlms, arch, tmp_path):
    folder = tmp_path / "data"
    (folder / "imgs").mkdir(parents=True)
    name = "<b onmouseover=x>'&.png"
    shutil.copyfile(SHAPES.parent / "imgs" / "0001.png", folder / "imgs" / name)
    row = {"messages": [{"role": "user", "content": [{"type": "image", "image": f"imgs/{name}"}, {"type": "text", "text": "<script>alert(1)</script> what?"}]},
                        {"role": "assistant", "content": "A <i>blue</i> circle."}]}
    data = helpers.write_jsonl(folder / "train.jsonl", [row, row])
    _, _, sample, _ = data_tab.inspect(str(data), "auto", "", raw_for(vlms[arch], data, tmp_path), 0)
    assert "<script" not in sample and "<b " not in sample and "<i>" not in sample
    assert "&lt;script&gt;" in sample
    parsed = parse(sample)
    assert parsed.images[0]["alt"] == f"imgs/{name}"  # the attribute survives intact: its quote is escaped
    assert f"image 1 · 48×48imgs/{name}" in parsed.text
    assert "".join(t for c, t in body(parsed) if c == "trained").strip() == "A <i>blue</i> circle."


def test_large_images_become_small_thumbnails(vlms, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (600, 300), (200, 30, 30)).save(folder / "wide.png")
    row = {"messages": [{"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "colour?"}]},
                        {"role": "assistant", "content": "red"}]}
    data = helpers.write_jsonl(folder / "train.jsonl", [row])
    _, _, sample, _ = data_tab.inspect(str(data), "auto", "", raw_for(vlms["idefics3"], data, tmp_path, image_max_pixels=40_000), 0)
    parsed = parse(sample)
    shown = decoded(parsed.images[0]["src"])
    assert shown.size == (THUMBNAIL_PX, THUMBNAIL_PX // 2)
    assert shown.getpixel((64, 32)) == (200, 30, 30)
    assert "image 1 · 600×300wide.png" in parsed.text


def test_images_with_a_text_model_are_refused(tiny_llama_dir, tmp_path):
    raw = load_recipe(helpers.recipe_dict(tiny_llama_dir, SHAPES, tmp_path / "out")).to_yaml_dict()
    with pytest.raises(StudioError, match="text-only model"):
        data_tab.inspect(str(SHAPES), "auto", "", raw, 0)


def test_a_bad_image_is_reported_as_training_would(vlms, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "broken.png").write_bytes((SHAPES.parent / "imgs" / "0001.png").read_bytes()[:60])
    row = {"messages": [{"role": "user", "content": [{"type": "image", "image": "broken.png"}, {"type": "text", "text": "?"}]},
                        {"role": "assistant", "content": "x"}]}
    data = helpers.write_jsonl(folder / "train.jsonl", [row])
    with pytest.raises(StudioError, match="cannot be read") as info:
        data_tab.inspect(str(data), "auto", "", raw_for(vlms["gemma3"], data, tmp_path), 0)
    assert "broken.png" in info.value.where


def test_text_data_keeps_its_plain_view(tiny_raw, tiny_data):
    # No image token set: the legend and the tokens have no image marks.
    _, _, sample, _ = data_tab.inspect(str(tiny_data), "auto", "", tiny_raw, 0)
    assert "image-tokens" not in sample and "<img" not in sample and "class='trained'" in sample
