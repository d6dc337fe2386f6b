"""Images in chat rows: the two spellings, where the files may live, and how each is checked and loaded.

Spellings, both normalised to the same message parts `[{"type": "image", "image": PATH}, {"type": "text", "text": ...}]`:

- parts: a message's `content` is a list of `{"type": "image", "image": "imgs/0001.png"}` and
  `{"type": "text", "text": "..."}` (the Hugging Face processors' chat format);
- LLaVA / ShareGPT: `<image>` stands in a message's text and the row's `images` list names the files, in order.

Rules, all checked before a model loads (by `studio validate`, and by `studio train` before the run directory
is touched), each failure a StudioError naming the row and the file:

- a path is relative to the dataset file's folder and must stay inside it (after symlinks): a recipe on a shared
  server can only reach the data folder its owner uploaded, and a data folder is self-contained to copy or audit;
- nothing is fetched: an http(s) (or any other URL) image is refused;
- the header's dimensions are checked before any pixel is decoded (a small file can declare a decompression
  bomb of billions of pixels), then the file is verified and decoded whole, so a truncated file fails here;
- 8-bit modes (greyscale, palette, CMYK, with or without alpha) become RGB, transparency composited on white as
  viewers show it; 16-bit and floating-point images are refused (their values do not map to 8 bits faithfully);
- each image is downscaled, aspect ratio kept, to at most `data.image_max_pixels` pixels.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

from studio.errors import StudioError

IMAGE_TOKEN = "<image>"  # the LLaVA / ShareGPT placeholder
# Refused before decoding: 8192 x 8192, whose RGB pixels alone take 192 MiB. Pillow's own bomb check (89 and
# 179 megapixels) comes later and is caught too.
MAX_DECODE_PIXELS = 8192 * 8192
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^data:", re.ASCII)


def content_parts(where: str, index: int, content: list) -> list[dict]:
    """A message's list content as normal parts (`image` with the path as written, `text`); a StudioError for any other shape."""
    if not content:
        raise StudioError(f"message {index} has an empty content list", where=where, fix='give it parts such as [{"type": "image", "image": "imgs/1.png"}, {"type": "text", "text": "..."}]')
    parts = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image" and isinstance(part.get("image"), str) and part["image"].strip():
            parts.append({"type": "image", "image": part["image"]})
        else:
            raise StudioError(f"part {number} of message {index} is not a text or image part: {str(part)[:80]}", where=where,
                              fix='write {"type": "text", "text": "..."} or {"type": "image", "image": "path/relative/to/the/dataset.png"}')
    if not any(p["type"] == "image" or p["text"].strip() for p in parts):
        raise StudioError(f"message {index} has only empty text parts", where=where, fix="give the message some text or an image")
    return parts


def with_row_images(where: str, messages: list[dict], images: object) -> list[dict]:
    """The LLaVA / ShareGPT spelling: each `<image>` in the messages' text becomes an image part naming the row's
    next `images` entry, so both spellings end as the same messages."""
    if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
        raise StudioError("'images' must be a list of image paths", where=where, fix='write "images": ["imgs/0001.png"], one path per <image> in the text')
    wanted = sum(m["content"].count(IMAGE_TOKEN) for m in messages if isinstance(m["content"], str))
    if wanted != len(images):
        raise StudioError(f"the text holds {wanted} {IMAGE_TOKEN} placeholder(s) but 'images' lists {len(images)} file(s)", where=where,
                          fix=f"put one {IMAGE_TOKEN} in the text where each listed image belongs")
    queue = list(images)
    out = []
    for message in messages:
        text = message["content"]
        if not isinstance(text, str) or IMAGE_TOKEN not in text:
            out.append(message)
            continue
        parts = []
        for number, piece in enumerate(text.split(IMAGE_TOKEN)):
            if number:
                parts.append({"type": "image", "image": queue.pop(0)})
            # The placeholder usually sits on its own line; that line break is the spelling's, not the content's.
            piece = piece.strip("\n")
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({**message, "content": parts})
    return out


def message_images(messages) -> list[str]:
    """Every image path of the messages, in order."""
    return [p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"]


def text_of(content) -> str:
    """A message's text: the string itself, or its text parts joined (what a person reads of a turn with images)."""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def has_images(examples) -> bool:
    """Whether any example's messages hold an image."""
    return any(e.messages and message_images(e.messages) for e in examples)


def resolve_images(examples: list, data_path: str | Path, max_pixels: int) -> list:
    """Examples whose image paths are absolute, each file checked and decoded once (see the module's rules);
    a StudioError naming the row and the file for the first bad one."""
    if not has_images(examples):
        return examples
    folder = Path(data_path).resolve()
    folder = folder if folder.is_dir() else folder.parent
    out = []
    for example in examples:
        messages = []
        for index, message in enumerate(example.messages):
            if isinstance(message["content"], list) and message["role"] == "assistant" and any(p["type"] == "image" for p in message["content"]):
                raise StudioError(f"message {index} (assistant) holds an image; the model reads images, it does not write them", where=example.where,
                                  fix="put images in the user's turns")
            if isinstance(message["content"], list):
                parts = [{"type": "image", "image": str(resolve_image(p["image"], folder, example.where))} if p["type"] == "image" else p for p in message["content"]]
                message = {**message, "content": parts}
            messages.append(message)
        for path in message_images(messages):
            load_image(path, example.where, max_pixels)
        out.append(replace(example, messages=tuple(messages)))
    return out


def resolve_image(name: str, folder: Path, where: str) -> Path:
    """The file an image path names: relative to the dataset's folder and inside it; never a URL."""
    if _URL.match(name.strip()):
        raise StudioError(f"image {name[:120]!r} is a URL; the studio reads images from disk only and fetches nothing", where=where,
                          fix="download the image next to the dataset file and name it by its relative path")
    if "\0" in name:
        raise StudioError("an image path contains a NUL byte", where=where, fix="fix the image path")
    target = (folder / Path(name).expanduser()).resolve()
    if target != folder and folder not in target.parents:
        raise StudioError(f"image {name!r} lies outside the dataset's folder {folder}", where=where,
                          fix="keep images in the dataset file's folder (or below it) and name them relative to it")
    return target


def load_image(path: str | Path, where: str, max_pixels: int):
    """The image at `path` as an RGB PIL image of at most `max_pixels` pixels (aspect ratio kept); a StudioError
    naming the row and the file for a missing, unreadable, truncated, too large or high-bit-depth image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    here = f"{where}: image {path}"
    if not path.is_file():
        raise StudioError("image file not found" if not path.exists() else "image path is not a file", where=here, fix="check the path; it is relative to the dataset file's folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by our own, lower limit
            with Image.open(path) as probe:  # reads the header only
                _check_size(probe.size, here)
                probe.verify()  # chunk structure and checksums, still without decoding
            with Image.open(path) as image:
                image.load()
                return _bounded(_to_rgb(image, here), max_pixels)
    except Image.DecompressionBombError as exc:
        raise StudioError(f"image is too large to decode safely ({exc})", where=here, fix=_SMALLER) from None
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError) as exc:  # Pillow's errors for a broken file
        raise StudioError(f"image cannot be read: {str(exc) or type(exc).__name__}", where=here,
                          fix="re-save the image as PNG or JPEG; a truncated or corrupt file must be replaced") from None


_SMALLER = f"downscale the image below {MAX_DECODE_PIXELS // 10**6} megapixels before training (data.image_max_pixels bounds what the model sees)"


def _check_size(size: tuple[int, int], here: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise StudioError(f"image has no pixels ({width}x{height})", where=here, fix="replace the image")
    if width * height > MAX_DECODE_PIXELS:
        raise StudioError(f"image is {width}x{height} pixels, above the {MAX_DECODE_PIXELS:,} the studio decodes", where=here, fix=_SMALLER)


def _to_rgb(image, here: str):
    if image.mode not in _EIGHT_BIT_MODES:
        raise StudioError(f"image mode {image.mode} (16-bit or floating point) cannot be converted to RGB faithfully", where=here,
                          fix="convert the image to 8-bit RGB or greyscale (e.g. PIL: image.point(lambda v: v / 256).convert('L'))")
    if image.mode == "RGB":
        return image.copy()
    from PIL import Image

    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _bounded(image, max_pixels: int):
    width, height = image.size
    if width * height <= max_pixels:
        return image
    from PIL import Image

    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def thumbnail_uri(path: str | Path, where: str, side: int = 128) -> str:
    """The image at `path` (checked like training data) as a `data:image/png;base64,...` URI at most `side` pixels
    on its longer edge: self-contained pages (the report, the UI's samples) show pictures without serving files."""
    import base64
    import io

    image = load_image(path, where, MAX_DECODE_PIXELS)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
