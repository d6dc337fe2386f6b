"""Data: read a dataset file, normalize its format, render it with the chat template, mask the loss.

    readers.py    files (JSONL, JSON, CSV, Parquet, saved datasets, image folders) -> rows that know their file and line
    image_datasets.py  rows whose images are data (a datasets Image feature, an imagefolder) -> rows naming image files
    formats.py    rows -> one normal form (chat messages, plain text, a preference pair, or a prompt with columns)
    images.py     images in chat rows: both spellings, where files may live, checked and bounded before a model loads
    render.py     normal form -> token ids and labels, exactly as training sees them; preference pairs as text
    vision.py     the same for vision-language models, through their processor; batches with pixels (VisionCollator)
    split.py      the one seeded validation split every method uses
    manifest.py   what was trained on: sha256 and token-length statistics (data.json)
    build.py      build_data: the recipe's data section -> encoded examples and the manifest

`build_data(recipe, tokenizer)` is the one entry point supervised training uses; the pieces are public for
the UI (which shows a sample exactly as training sees it) and for tests.
"""

from studio.data.build import BuiltData, build_data, load_examples, load_heldout
from studio.data.formats import Example, detect_format, normalize, reference_of
from studio.data.readers import read_rows
from studio.data.render import IGNORE, Encoded, Renderer, prepare_tokenizer, render_pairs, template_text

__all__ = [
    "BuiltData", "Encoded", "Example", "IGNORE", "Renderer", "build_data", "detect_format", "load_examples", "load_heldout",
    "normalize", "prepare_tokenizer", "read_rows", "reference_of", "render_pairs", "template_text",
]
