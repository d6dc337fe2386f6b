"""Read dataset files into rows, each remembering where it came from (file and line).

Supports JSONL, JSON (a list, or an object holding one list), CSV, Parquet, directories saved with
`datasets.Dataset.save_to_disk`, and Hugging Face imagefolders (image files plus a metadata file); rows whose
images are data become rows naming image files (studio.data.image_datasets). A malformed row fails with its file
and line number.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from studio.data.image_datasets import has_image_feature, imagefolder_metadata, imagefolder_rows, saved_rows
from studio.errors import StudioError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SUPPORTED = f"{', '.join(FILE_SUFFIXES)}, a directory saved with datasets, or an imagefolder (images plus metadata.jsonl)"
# csv's default field limit (128 KiB) would reject a long document; long rows are truncated later, not refused.
CSV_FIELD_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Row:
    """One example as read from disk, with its origin for error messages."""

    data: dict
    where: str


def read_rows(path: str | Path) -> list[Row]:
    """Read every row of a dataset file; raise StudioError naming the file and line on bad input."""
    path = Path(path)
    try:
        found = path.exists()
    except OSError as exc:  # a name too long for the file system
        raise StudioError(f"dataset path cannot be used: {exc.strerror}", where=str(path)[:200], fix="check data.path") from None
    if not found:
        raise StudioError(f"dataset not found: {path}", where=str(path),
                          fix="check data.path; a relative path is looked for in the recipe's folder, then in the working directory")
    if path.is_dir():
        rows = _read_dir(path)
    else:
        suffix = path.suffix.lower()
        readers = dict(zip(FILE_SUFFIXES, (_read_jsonl, _read_json, _read_csv, _read_parquet)))  # in FILE_SUFFIXES order
        if suffix not in readers:
            raise StudioError(f"unsupported dataset file type '{suffix or path.name}'", where=str(path), fix=f"use {SUPPORTED}")
        rows = readers[suffix](path)
    if not rows:
        raise StudioError("dataset has no rows", where=str(path), fix="add examples to the file")
    return rows


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise StudioError(f"file is not valid UTF-8 (byte {exc.start})", where=f"{path}:{line}", fix="re-save the file as UTF-8") from None


def _loads(text: str):
    """json.loads, turning what it raises besides JSONDecodeError (over-long integers, deep nesting) into ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("values are nested too deeply") from None
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise ValueError(str(exc).split(";")[0]) from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    # Lines end at "\n" only: U+2028 and U+0085 may stand unescaped inside a JSON string.
    for number, line in enumerate(_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = _loads(line)
        except json.JSONDecodeError as exc:
            raise StudioError(f"line is not valid JSON: {exc.msg} (column {exc.colno})", where=where, fix="fix or remove that line; each line must be one JSON object") from None
        except ValueError as exc:
            raise StudioError(f"line cannot be read: {exc}", where=where, fix="fix or remove that line") from None
        if not isinstance(value, dict):
            raise StudioError(f"line holds a JSON {type(value).__name__}, not an object", where=where, fix='each line must be an object such as {"messages": [...]}')
        rows.append(Row(value, where))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        value = _loads(_text(path))
    except json.JSONDecodeError as exc:
        raise StudioError(f"file is not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}", fix="fix the JSON at that line") from None
    except ValueError as exc:
        raise StudioError(f"file cannot be read: {exc}", where=str(path), fix="fix the values in the file") from None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise StudioError("a JSON dataset must be a list of objects, or an object holding exactly one such list", where=str(path), fix="wrap the examples in a top-level list")
        value = lists[0]
    if not isinstance(value, list):
        raise StudioError(f"a JSON dataset must be a list of objects, got {type(value).__name__}", where=str(path), fix="wrap the examples in a top-level list")
    rows = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise StudioError(f"item {index} is a {type(item).__name__}, not an object", where=f"{path} [item {index}]", fix="every item must be a JSON object")
        rows.append(Row(item, f"{path} [item {index}]"))
    return rows


def _read_csv(path: Path) -> list[Row]:
    text = _text(path)
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    # A file-like source keeps the line breaks inside quoted fields (a list of lines would drop them).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise StudioError("CSV file has no header row", where=f"{path}:1", fix="put the column names on the first line")
    rows = []
    try:
        for item in reader:
            where = f"{path}:{reader.line_num}"
            if None in item:
                raise StudioError("row has more fields than the header", where=where, fix="quote fields that contain commas")
            if any(v is None for v in item.values()):
                missing = [k for k, v in item.items() if v is None]
                raise StudioError(f"row is missing column(s) {missing}", where=where, fix="give every row a value for every header column")
            rows.append(Row(dict(item), where))
    except csv.Error as exc:
        raise StudioError(f"CSV parse error: {exc}", where=f"{path}:{reader.line_num}", fix="fix the quoting on that line") from None
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise StudioError(f"cannot read Parquet file: {exc}", where=str(path), fix="check the file is a valid Parquet file") from None
    return [Row(item, f"{path} [row {i}]") for i, item in enumerate(table.to_pylist())]


def _read_dir(path: Path) -> list[Row]:
    """A folder: the imagefolder layout (image files and one metadata file), else one written by save_to_disk."""
    metadata = imagefolder_metadata(path)
    if metadata is None:
        return _read_hf_dir(path)
    read = {".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}[metadata.suffix]
    return [Row(data, where) for data, where in imagefolder_rows(path, read(metadata))]


def _read_hf_dir(path: Path) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for a wrong folder
        raise StudioError(f"directory is not a saved datasets dataset: {exc}", where=str(path), fix="point data.path at a file, at a folder written by Dataset.save_to_disk, or at an imagefolder (images plus metadata.jsonl)") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise StudioError(f"dataset dict has splits {list(loaded)} but no 'train'", where=str(path), fix="save the training split as 'train'")
        loaded = loaded["train"]
    if has_image_feature(loaded.features):  # pixels stay undecoded; the rows name image files inside the folder
        return [Row(data, where) for data, where in saved_rows(loaded, path)]
    return [Row(item, f"{path} [row {i}]") for i, item in enumerate(loaded)]
