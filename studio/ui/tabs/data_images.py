"""The Data tab's sample of vision-language data: each image of the sample as a thumbnail beside the sample's tokens.

The thumbnails are inline `data:` URIs of small PNGs (studio.data.images.thumbnail_uri: the file checked as training
checks it), so the page never serves a workspace file. File names are the user's data and are escaped; the tokens
arrive as HTML already escaped by the tab's token view, where each run of image tokens is one compact, untrained mark.
"""

from __future__ import annotations

import html
from pathlib import Path

from studio.data.images import thumbnail_uri

THUMBNAIL_PX = 128  # the longest side of a thumbnail
IMAGE_TOKEN_STYLE = "background:#eaecf0;color:#475467;border:1px dashed #98a2b3;border-radius:3px;padding:0 2px"


def image_token_mark(text: str, count: int) -> str:
    """A run of `count` image tokens as one mark, e.g. `<image ×64>` (escaped), styled as context, never trained."""
    label = text if count == 1 else f"{text[:-1]} ×{count}>" if text.endswith(">") else f"{text} ×{count}"
    return (f"<span class='image-tokens' style='{IMAGE_TOKEN_STYLE}' title='{count} image token(s): the image features, never trained'>"
            f"{html.escape(label)}</span>")


IMAGE_LEGEND = f" · <span class='image-tokens' style='{IMAGE_TOKEN_STYLE}'>image tokens (never trained)</span>"


def _shown_name(path: str, folder: Path | None) -> str:
    try:
        return str(Path(path).relative_to(folder)) if folder else Path(path).name
    except ValueError:
        return Path(path).name


def vision_sample_html(encoded, tokens_html: str, folder: Path | None = None) -> str:
    """A vision-language sample: its images as thumbnails (in the order the text holds them, each captioned with its
    file, relative to the dataset's `folder`, and its size in pixels) beside `tokens_html`, the sample's tokens."""
    from PIL import Image

    figures = []
    for number, path in enumerate(encoded.images, 1):
        uri = thumbnail_uri(path, encoded.where, THUMBNAIL_PX)
        with Image.open(path) as header:  # the header only; thumbnail_uri has checked the file
            width, height = header.size
        name = html.escape(_shown_name(path, folder))
        figures.append(
            f"<figure class='sample-image' style='margin:0;width:{THUMBNAIL_PX}px'><img src='{uri}' alt='{name}' "
            f"style='max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px;border:1px solid #d0d5dd;border-radius:4px'>"
            "<figcaption style='font-size:0.8em;word-break:break-all'>"
            f"image {number} · {width}×{height}<br>{name}</figcaption></figure>")
    column = "flex:0 0 auto;display:flex;flex-direction:column;gap:8px"
    images = f"<div class='sample-images' style='{column}'>{''.join(figures)}</div>" if figures else ""
    return (f"<div class='vision-sample' style='display:flex;gap:12px;align-items:flex-start'>{images}"
            f"<div style='flex:1 1 0;min-width:0'>{tokens_html}</div></div>")


__all__ = ["IMAGE_LEGEND", "THUMBNAIL_PX", "image_token_mark", "vision_sample_html"]
