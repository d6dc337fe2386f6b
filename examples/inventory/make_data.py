"""Write the GRPO demo dataset: questions about a short inventory, with a checkable numeric answer.

"Ana has 7 apples, 3 pears and 12 plums. How many pears does Ana have?" -> 3. Small models answer by restating
the whole inventory (the bundled SmolLM2-135M gets about a third right, near chance among three numbers); a
verifiable reward on the final number teaches them to answer the question asked. Train and test use disjoint
names and objects, so the held-out score measures reading the question, not memorised phrasings.
Deterministic: the same seed gives the same files byte for byte.

    python examples/inventory/make_data.py            # rewrites train.jsonl and test.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jade", "Kofi", "Lena", "Milo", "Nia",
         "Otto", "Pia", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Vik", "Wren", "Yara", "Zeke", "Ada", "Bo", "Cleo"]
OBJECTS = ["apples", "marbles", "stickers", "books", "pencils", "coins", "shells", "cards", "stamps", "cookies",
           "balloons", "buttons", "crayons", "candles", "plums", "rocks", "ribbons", "beads", "cups", "hats"]


def question(rng: random.Random, names: list[str], objects: list[str]) -> dict:
    """Three different things, three different counts, and a question about one of them."""
    name = rng.choice(names)
    things = rng.sample(objects, 3)
    counts = rng.sample(range(2, 20), 3)
    asked = rng.randrange(3)
    listed = f"{counts[0]} {things[0]}, {counts[1]} {things[1]} and {counts[2]} {things[2]}"
    return {"prompt": f"{name} has {listed}. How many {things[asked]} does {name} have?", "answer": str(counts[asked])}


def main(out_dir: Path = Path(__file__).parent, seed: int = 11, n_train: int = 800, n_test: int = 200) -> None:
    """Write train.jsonl and test.jsonl; names and objects of the two files do not overlap."""
    rng = random.Random(seed)
    splits = (("train.jsonl", NAMES[:20], OBJECTS[:14], n_train), ("test.jsonl", NAMES[20:], OBJECTS[14:], n_test))
    for file, names, objects, count in splits:
        rows = [question(rng, names, objects) for _ in range(count)]
        (out_dir / file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
