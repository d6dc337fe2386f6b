"""Write the vision demo dataset: small pictures of one coloured shape each, and a chat that names them.

Each row asks about one picture (`imgs/NNNN.png`, 48 x 48 pixels, a red, green, blue or yellow circle, square or
triangle on a white ground, at a random place and size) and the assistant answers with the colour and the shape,
e.g. "A blue triangle.". train.jsonl writes the images as message parts; train_llava.jsonl holds the same rows in
the LLaVA / ShareGPT spelling (`<image>` in the text, the files in `images`), which the studio reads as the same
messages; test.jsonl holds held-out pictures of every pair (for `studio eval`). Deterministic: the same seed gives
the same files byte for byte.

    python examples/shapes/make_data.py            # rewrites imgs/, train.jsonl, train_llava.jsonl and test.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 200, 20)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = ("What is in the picture?", "Name the colour and the shape.", "Describe the shape you see.")
SIZE = 48


def draw(rng: random.Random, colour: str, shape: str) -> Image.Image:
    """One picture: the shape filled with the colour, somewhere on a white square."""
    image = Image.new("RGB", (SIZE, SIZE), "white")
    pen = ImageDraw.Draw(image)
    side = rng.randint(20, 36)
    x, y = rng.randint(2, SIZE - side - 2), rng.randint(2, SIZE - side - 2)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse((x, y, x + side, y + side), fill=fill)
    elif shape == "square":
        pen.rectangle((x, y, x + side, y + side), fill=fill)
    else:
        pen.polygon([(x + side // 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return image


def rows(rng: random.Random, out_dir: Path, pairs: list[tuple[str, str]], prefix: str) -> tuple[list[dict], list[dict]]:
    """Draw one picture per (colour, shape) pair into imgs/; return its rows in both spellings."""
    parts, llava = [], []
    for number, (colour, shape) in enumerate(pairs, start=1):
        name = f"imgs/{prefix}{number:04d}.png"
        # optimize=False and no metadata: the same pixels give the same bytes on every run.
        draw(rng, colour, shape).save(out_dir / name, format="PNG", optimize=False)
        question, answer = rng.choice(QUESTIONS), f"A {colour} {shape}."
        parts.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": name}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ]})
        llava.append({"conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}], "images": [name]})
    return parts, llava


def main(out_dir: Path = Path(__file__).parent, seed: int = 3, repeats: int = 2, test_repeats: int = 1) -> None:
    """Write imgs/*.png, train.jsonl and train_llava.jsonl (every colour and shape `repeats` times, shuffled), and
    test.jsonl: held-out pictures (imgs/test_*.png, drawn with their own seed) of every pair `test_repeats` times."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    pairs = [(c, s) for c in COLOURS for s in SHAPES] * repeats
    rng.shuffle(pairs)
    (out_dir / "imgs").mkdir(parents=True, exist_ok=True)
    parts, llava = rows(rng, out_dir, pairs, "")
    held_out = random.Random(seed + 1)
    test, _ = rows(held_out, out_dir, [(c, s) for c in COLOURS for s in SHAPES] * test_repeats, "test_")
    for file, written in (("train.jsonl", parts), ("train_llava.jsonl", llava), ("test.jsonl", test)):
        (out_dir / file).write_text("".join(json.dumps(row) + "\n" for row in written), encoding="utf-8")


if __name__ == "__main__":
    main()
