"""Datasets whose images are data, not paths: `save_to_disk` folders with an `Image` feature, and the Hugging Face
"imagefolder" layout. Their rows become rows in the parts spelling of studio.data.images, every image named by a
path relative to the dataset folder, so formats, the image checks and training read them like JSONL image rows.

Where the pictures come from:

- a saved dataset's `image` column (one `Image`) or `images` column (a list of `Image`), read undecoded (Arrow's
  raw values, so no pixel is decoded here): each value is `{"bytes", "path"}`. Bytes, when present, are the
  picture (the path is then only the original file's name) and are written once, named by their content, to
  `<dataset folder>/images/<sha256[:20]>.<ext>`, the extension taken from the bytes' header, never from a name;
  a file already there with those bytes is not written again. A value with a path alone must name a file inside
  the dataset folder (studio.data.images.resolve_image's rules). An `Image` column of another name, or nested in
  another column, is refused: rename it to `image` / `images`.
- an imagefolder: a folder holding image files and one `metadata.jsonl` / `metadata.csv` / `metadata.parquet`,
  whose `file_name` column (or a list in `file_names`, or `<name>_file_name(s)`) names each row's image relative
  to the folder, inside it.

Where the pictures go (the rule of TRL's `prepare_multimodal_messages`, with which the_cauldron- and
llava-instruct-style datasets are trained):

- the text is `messages` / `conversations` (role/content or from/value), the_cauldron's `texts` (a list of
  `{"user", "assistant"}` turns), `prompt` / `completion`, or `question` / `answer` (a visual question: trained as
  prompt / completion, since GRPO's question/answer rows take no images);
- placeholders, `<image>` in a message's text or an image part without a file (`{"type": "image"}`), take the row's
  images in order, and their count must equal the images';
- with no placeholder at all, the images go, in order, before the text of the first user turn;
- a row with images but none of those columns, or no user turn, is refused: nothing says where the picture belongs.

Columns are recognised here, before `data.columns` renames anything, so a dataset with images names them as above.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from studio.data.images import IMAGE_TOKEN, resolve_image
from studio.errors import StudioError

IMAGES_DIR = "images"  # inside the dataset folder, so the extracted files obey the same path rules as any image
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
IMAGE_COLUMNS = ("image", "images")
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what save_to_disk writes; such a folder is never an imagefolder
_BATCH = 64  # rows per Arrow batch: bounded memory for datasets of many large embedded images
_PLACES = "`messages`/`conversations`, `texts`, `prompt`/`completion` or `question`/`answer`"


def imagefolder_metadata(folder: Path) -> Path | None:
    """The metadata file when `folder` is in the imagefolder layout, else None (a `save_to_disk` folder is not)."""
    if any((folder / marker).is_file() for marker in _SAVED_MARKERS):
        return None
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise StudioError(f"the folder holds {len(found)} metadata files ({', '.join(p.name for p in found)})", where=str(folder),
                          fix="keep one metadata file: it alone says which image and text make each row")
    return found[0] if found else None


def imagefolder_rows(folder: Path, rows: Iterable) -> Iterator[tuple[dict, str]]:
    """Each metadata row (anything with `.data` and `.where`) as (data, where), its image file placed in its text."""
    root = folder.resolve()
    for row in rows:
        data = dict(row.data)
        keys = [k for k in data if k in ("file_name", "file_names") or k.endswith(("_file_name", "_file_names"))]
        if len(keys) != 1:
            raise StudioError(f"an imagefolder row needs one `file_name` column, this one has {keys or 'none'}", where=row.where,
                              fix='name each row\'s image in `file_name` (or a list in `file_names`), e.g. {"file_name": "0001.png", "question": "...", "answer": "..."}')
        value = data.pop(keys[0])
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise StudioError(f"`{keys[0]}` must name image files, got {str(value)[:80]}", where=row.where, fix="write each image's path relative to the folder")
        yield place(data, [_inside(name, root, row.where) for name in names], row.where), row.where


def has_image_feature(features) -> bool:
    """Whether a datasets `Features` holds an `Image` anywhere (such a dataset's rows are read by `saved_rows`)."""
    import datasets

    if isinstance(features, datasets.Image):
        return True
    if isinstance(features, dict):
        return any(has_image_feature(f) for f in features.values())
    if isinstance(features, (list, tuple)):
        return any(has_image_feature(f) for f in features)
    return has_image_feature(getattr(features, "feature", None)) if hasattr(features, "feature") else False


def saved_rows(dataset, folder: Path) -> Iterator[tuple[dict, str]]:
    """Each row of a saved dataset with `Image` columns as (data, where): its images as files in the folder, placed
    in its text (see the module's rules). Nothing is decoded; embedded bytes are written once."""
    columns = _image_columns(dataset.features, folder)
    store = _Store(folder.resolve())
    index = 0
    # The Arrow format yields each Image's raw {"bytes", "path"} however it is nested; a decode=False cast of a
    # list-of-Image column would instead rewrite the whole dataset as a cache file inside the dataset's folder.
    for batch in dataset.with_format("arrow").iter(batch_size=_BATCH):
        for data in batch.to_pylist():
            where = f"{folder} [row {index}]"
            index += 1
            paths = [store.path_of(value, number, where) for number, value in enumerate(_values(data, columns, where))]
            yield place(data, paths, where), where


def place(data: dict, images: list[str], where: str) -> dict:
    """The row with its images (paths relative to the dataset folder) put in its text by the module's rules; the
    text columns keep the spellings studio.data.formats reads."""
    data = dict(data)
    if isinstance(data.get("texts"), list) and "messages" not in data and "conversations" not in data:
        data["messages"] = _cauldron(data.pop("texts"), where)
    for key in ("messages", "conversations"):
        if key in data:
            data[key] = _into_messages(data[key], images, where)
            return data
    if "question" in data and "answer" in data and "prompt" not in data:
        data["prompt"], data["completion"] = data.pop("question"), data.pop("answer")
    if "prompt" in data and "completion" in data and isinstance(data["prompt"], (str, list)):
        prompt = data["prompt"]
        if images or isinstance(prompt, list) or IMAGE_TOKEN in prompt:
            data["prompt"] = _into_messages(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}], images, where)
        return data
    if images:
        raise StudioError(f"the row has {len(images)} image(s) but no text column to put them in", where=where,
                          fix=f"give image rows {_PLACES} columns (named so in the dataset: data.columns renames after images are placed)")
    return data


def _into_messages(messages: object, images: list[str], where: str) -> object:
    """Messages with the images in their placeholders, or before the first user turn's text when there are none."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        if images:
            raise StudioError("the row's messages are not a list of messages, so its images have no place", where=where,
                              fix='write [{"role": "user", "content": "<image>\\nWhat is shown?"}, {"role": "assistant", "content": "..."}]')
        return messages  # studio.data.formats names what is wrong with them
    # One role/content shape: Arrow gives every message every key of the column, the unused ones None.
    turns = [{"role": _first(m, "role", "from"), "content": _first(m, "content", "value")} for m in messages]
    slots = sum(_slots(t["content"]) for t in turns)
    if slots == 0 and images:
        users = [i for i, t in enumerate(turns) if isinstance(t["role"], str) and t["role"].lower() in ("user", "human")]
        if not users:
            raise StudioError(f"the row has {len(images)} image(s) but no user turn to put them in", where=where,
                              fix=f"add the user's turn, or mark each image's place with {IMAGE_TOKEN} in the text")
        content = turns[users[0]]["content"]
        text = [{"type": "text", "text": content}] if isinstance(content, str) and content.strip() else content if isinstance(content, list) else []
        turns[users[0]]["content"] = [{"type": "image", "image": path} for path in images] + text
        return turns
    if slots != len(images):
        raise StudioError(f"the text holds {slots} image placeholder(s) ({IMAGE_TOKEN} or an image part without a file) but the row has {len(images)} image(s)",
                          where=where, fix=f"put one {IMAGE_TOKEN} (or {{\"type\": \"image\"}} part) where each of the row's images belongs, or none to put them all before the first user text")
    queue = list(images)
    return [{**t, "content": _filled(t["content"], queue)} for t in turns]


def _first(message: dict, *keys: str) -> object:
    return next((message[k] for k in keys if message.get(k) is not None), None)


def _is_slot(part: object) -> bool:
    """An image part that names no file: a placeholder the row's images fill."""
    return isinstance(part, dict) and part.get("type") == "image" and not (isinstance(part.get("image"), str) and part["image"].strip())


def _slots(content: object) -> int:
    if isinstance(content, str):
        return content.count(IMAGE_TOKEN)
    return sum(_is_slot(p) for p in content) if isinstance(content, list) else 0


def _filled(content: object, queue: list[str]) -> object:
    if isinstance(content, list):
        return [{"type": "image", "image": queue.pop(0)} if _is_slot(p) else p for p in content]
    if not isinstance(content, str) or IMAGE_TOKEN not in content:
        return content
    parts = []
    for number, piece in enumerate(content.split(IMAGE_TOKEN)):
        if number:
            parts.append({"type": "image", "image": queue.pop(0)})
        piece = piece.strip("\n")  # the placeholder's own line break, as in studio.data.images.with_row_images
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _cauldron(texts: list, where: str) -> list[dict]:
    """the_cauldron's `texts` ([{"user", "assistant", "source"}]) as alternating user and assistant messages."""
    messages = []
    for number, turn in enumerate(texts):
        if not (isinstance(turn, dict) and isinstance(turn.get("user"), str) and isinstance(turn.get("assistant"), str)):
            raise StudioError(f"`texts` entry {number} is not a {{\"user\": ..., \"assistant\": ...}} turn", where=where,
                              fix="give every entry of `texts` user and assistant text, or use a `messages` column")
        messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn["assistant"]}]
    return messages


def _image_columns(features, folder: Path) -> list[str]:
    """The `image` / `images` columns; a StudioError for an Image feature anywhere else."""
    other = [name for name, f in features.items() if name not in IMAGE_COLUMNS and has_image_feature(f)]
    if other:
        raise StudioError(f"column(s) {other} hold images; the studio reads images from an `image` or `images` column only", where=str(folder),
                          fix=f"rename it and save again: dataset.rename_column({other[0]!r}, 'images').save_to_disk(...)")
    columns = [name for name in IMAGE_COLUMNS if name in features and has_image_feature(features[name])]
    if len(columns) > 1:
        raise StudioError("the dataset has both an `image` and an `images` column", where=str(folder), fix="keep one column of images per row (`images`, a list, for several)")
    return columns


def _values(data: dict, columns: list[str], where: str) -> list[dict]:
    """The row's image values (popped from `data`), one list whether the column holds one image or several."""
    values = []
    for column in columns:
        value = data.pop(column)
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            if not isinstance(item, dict):
                raise StudioError(f"`{column}` holds {type(item).__name__}, not an image", where=where, fix="give the column images (or leave it empty for a row without one)")
            values.append(item)
    return values


def _inside(name: str, root: Path, where: str) -> str:
    """A path to an existing file inside the dataset folder, as a relative path (the parts spelling's form)."""
    return resolve_image(name, root, where).relative_to(root).as_posix()


class _Store:
    """Embedded image bytes as files `images/<sha256[:20]>.<ext>` in the dataset folder, each written once."""

    def __init__(self, root: Path):
        self.root = root
        self.known: dict[str, str] = {}  # sha256 -> relative path, so a repeated picture is hashed on disk once

    def path_of(self, value: dict, number: int, where: str) -> str:
        """The relative path of one `{"bytes", "path"}` image value, writing its bytes when they are not there yet."""
        data, name = value.get("bytes"), value.get("path")
        if data:
            return self._stored(data, number, where)
        if isinstance(name, str) and name.strip():
            return _inside(name, self.root, where)
        raise StudioError(f"image {number} of the row has neither bytes nor a path", where=where, fix="store the image in the dataset, or a path to it inside the dataset folder")

    def _stored(self, data: bytes, number: int, where: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.known:
            relative = f"{IMAGES_DIR}/{digest[:20]}.{_extension(data, number, where)}"
            target = self.root / relative
            if not (target.is_file() and target.stat().st_size == len(data) and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
                self._write(target, data)
            self.known[digest] = relative
        return self.known[digest]

    def _write(self, target: Path, data: bytes) -> None:
        folder = target.parent
        try:
            folder.mkdir(exist_ok=True)
            if folder.resolve() != folder:  # a symlinked images/ would put the files outside the dataset folder
                raise StudioError(f"{folder} is a link out of the dataset folder", where=str(folder), fix=f"remove the link; the studio writes the dataset's embedded images into {folder}")
            # Written under a temporary name and renamed, so an interrupted read never leaves a half image behind.
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".partial-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the image from a group that shares the data
                os.replace(temporary, target)
            finally:
                Path(temporary).unlink(missing_ok=True)  # only still there when the write failed
        except OSError as exc:
            raise StudioError(f"cannot write the dataset's embedded images: {exc.strerror or exc}", where=str(folder),
                              fix=f"make {self.root} writable, or copy the dataset to a writable folder: each embedded image is written there once, as a file training reads") from None


def _extension(data: bytes, number: int, where: str) -> str:
    """The file extension of image bytes, from the format Pillow reads in their header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked when the file is loaded
            with Image.open(io.BytesIO(data)) as probe:
                kind = (probe.format or "").lower()
    except Image.DecompressionBombError as exc:
        raise StudioError(f"image {number} of the row is too large to decode safely ({exc})", where=where, fix="downscale the image before saving the dataset") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise StudioError(f"image {number} of the row is not an image Pillow can read: {str(exc) or type(exc).__name__}", where=where,
                          fix="re-save the image as PNG or JPEG in the dataset") from None
    kind = {"jpeg": "jpg", "mpo": "jpg"}.get(kind, kind)  # MPO: a camera's multi-picture JPEG
    return kind if kind.isalnum() else "img"
