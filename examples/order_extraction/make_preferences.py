"""Write the preference dataset: for each request, a clean JSON answer (chosen) and a flawed one (rejected).

The flaws are the ones small models make before fine-tuning (seen in the demo's base-model answers):
the person's name copied into the company, the product left plural with the count in it, numbers
quoted, chatter around the JSON. Deterministic, from the same generator as the SFT data.

    python examples/order_extraction/make_preferences.py     # rewrites preferences.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_data import build, write_jsonl


def flawed(fields: dict, rng: random.Random) -> str:
    """A plausible but wrong extraction of the same request."""
    bad = dict(fields)
    flaw = rng.randrange(4)
    if flaw == 0:
        bad["company"] = bad["name"]
    elif flaw == 1:
        bad["product"] = f"{bad['quantity']} {bad['product']}s"
    elif flaw == 2:
        bad["quantity"] = str(bad["quantity"])
        bad["city"] = bad["company"]
    else:
        return "Sure! Here is the order as JSON:\n" + json.dumps(bad, indent=2) + "\nLet me know if you need anything else."
    return json.dumps(bad)


def build_preferences(seed: int = 11, n: int = 160) -> list[dict]:
    """prompt/chosen/rejected rows built from the SFT training rows."""
    rng = random.Random(seed)
    train, _test = build()
    rows = []
    for row in train[:n]:
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        rows.append({"prompt": prompt, "chosen": answer, "rejected": flawed(json.loads(answer), rng)})
    return rows


if __name__ == "__main__":
    here = Path(__file__).parent
    rows = build_preferences()
    write_jsonl(here / "preferences.jsonl", rows)
    print(f"wrote {len(rows)} preference pairs to {here / 'preferences.jsonl'}")
