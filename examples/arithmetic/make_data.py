"""Write the GRPO demo dataset: short arithmetic word problems with a checkable numeric answer.

Each row is a `prompt` (the question) and an `answer` (the number), the shape GRPO data takes: the model
writes its own solution and a reward function checks the final number. Train and test use disjoint
names and objects, so the held-out score measures arithmetic, not memorised phrasings. Deterministic:
the same seed gives the same files byte for byte.

    python examples/arithmetic/make_data.py            # rewrites train.jsonl and test.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jade", "Kofi", "Lena", "Milo", "Nia", "Otto",
         "Pia", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Vik", "Wren", "Yara", "Zeke", "Ada", "Bo", "Cleo", "Dev", "Eva"]
OBJECTS = ["apples", "marbles", "stickers", "books", "pencils", "coins", "shells", "cards", "stamps", "cookies",
           "balloons", "buttons", "crayons", "candles", "plums", "rocks", "ribbons", "beads", "cups", "hats"]
INSTRUCTION = "Think briefly, then give the answer as: Answer: <number>"

ADD = [
    "{name} has {a} {obj}. {name} gets {b} more {obj}. How many {obj} does {name} have now?",
    "There are {a} {obj} in a box and {b} {obj} on the table. How many {obj} are there in all?",
    "{name} bought {a} {obj} on Monday and {b} {obj} on Tuesday. How many {obj} did {name} buy?",
]
SUB = [
    "{name} has {a} {obj} and gives away {b}. How many {obj} does {name} have left?",
    "A shelf holds {a} {obj}. {b} of them are taken. How many {obj} are still on the shelf?",
    "{name} had {a} {obj} and lost {b} of them. How many {obj} does {name} have now?",
]


def problem(rng: random.Random, names: list[str], objects: list[str]) -> dict:
    """One word problem with its answer: a sum, or a difference that stays positive."""
    name, obj = rng.choice(names), rng.choice(objects)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    if rng.random() < 0.5:
        text, answer = rng.choice(ADD).format(name=name, obj=obj, a=a, b=b), a + b
    else:
        a, b = max(a, b) + 1, min(a, b)
        text, answer = rng.choice(SUB).format(name=name, obj=obj, a=a, b=b), a - b
    return {"prompt": f"{text} {INSTRUCTION}", "answer": str(answer)}


def main(out_dir: Path = Path(__file__).parent, seed: int = 7, n_train: int = 600, n_test: int = 100) -> None:
    """Write train.jsonl and test.jsonl; names and objects of the two files do not overlap."""
    rng = random.Random(seed)
    train_names, test_names = NAMES[:22], NAMES[22:]
    train_objects, test_objects = OBJECTS[:15], OBJECTS[15:]
    for file, names, objects, count in (("train.jsonl", train_names, train_objects, n_train), ("test.jsonl", test_names, test_objects, n_test)):
        rows = [problem(rng, names, objects) for _ in range(count)]
        (out_dir / file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
