"""Write the demo dataset: free-text purchase requests -> JSON with five fields.

The task is one a business recognises (turning emails into structured orders) and is scored
automatically by field accuracy. The train and test files are generated from disjoint people and
companies, so the test measures extraction, not memorisation. Deterministic: the same seed gives the
same files byte for byte.

    python examples/order_extraction/make_data.py            # rewrites train.jsonl and test.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

INSTRUCTION = "Extract the order as JSON with the keys name, company, product, quantity and city."

FIRST = [
    "Priya", "Tomas", "Aisha", "Lukas", "Mei", "Carlos", "Fatima", "Jonas", "Elena", "Kwame", "Sofia", "Ravi",
    "Hannah", "Mateo", "Yuki", "Omar", "Ingrid", "Diego", "Leila", "Pavel", "Grace", "Arjun", "Chloe", "Emeka",
    "Nadia", "Felix", "Amara", "Henrik", "Lucia", "Tariq", "Zoe", "Bruno", "Ayesha", "Oskar", "Mina", "Rafael",
    "Nora", "Samir", "Ines", "Viktor", "Leah", "Kenji", "Marta", "Idris", "Clara", "Anton", "Selin", "Marco",
]
LAST = [
    "Nair", "Novak", "Okafor", "Berg", "Tanaka", "Silva", "Haddad", "Keller", "Rossi", "Mensah", "Costa", "Patel",
    "Fischer", "Garcia", "Sato", "Farouk", "Larsen", "Romero", "Karimi", "Ivanov", "Walsh", "Mehta", "Dubois",
    "Eze", "Petrova", "Wagner", "Adeyemi", "Holm", "Moreno", "Aziz", "Clarke", "Lopes", "Khan", "Lind", "Park",
    "Duarte", "Weiss", "Bakr", "Ferreira", "Popov", "Stein", "Mori", "Nowak", "Bello", "Vidal", "Kraus", "Yilmaz",
]
COMPANIES = [
    "Bluefin Logistics", "Northwind Foods", "Apex Dental", "Cedar Print Co", "Helios Solar", "Riverside Clinic",
    "Summit Outdoor", "Lumen Labs", "Harbor Books", "Orchid Hotels", "Granite Builders", "Pixel Forge",
    "Maple Bakery", "Atlas Freight", "Nimbus Software", "Coral Fitness", "Ironwood Tools", "Silverline Taxis",
    "Meadow Farms", "Quartz Legal", "Falcon Security", "Juniper Schools", "Vertex Motors", "Willow Care",
    "Beacon Media", "Copper Kettle Cafe", "Starlight Events", "Tidewater Marine", "Evergreen Gardens",
    "Redwood Dental", "Polar Ice Rinks", "Sapphire Spa", "Keystone Insurance", "Lighthouse Tours",
    "Mosaic Studios", "Horizon Airlines", "Oakridge Pharmacy", "Pinnacle Gyms", "Saffron Kitchens",
    "Trident Shipping", "Union Textiles", "Velvet Theatre", "Westfield Library", "Zenith Optics",
]
PRODUCTS = [
    "X200 router", "standing desk", "label printer", "espresso machine", "safety helmet", "laptop stand",
    "USB-C dock", "office chair", "paper shredder", "solar panel kit", "first aid kit", "barcode scanner",
    "water filter", "projector", "wireless headset", "fire extinguisher", "monitor arm", "LED desk lamp",
    "whiteboard", "coffee grinder", "tablet case", "air purifier", "webcam", "cash drawer", "power bank",
    "ergonomic keyboard", "label tape roll", "network switch", "storage shelf", "hand truck",
]
CITIES = [
    "Leeds", "Porto", "Lagos", "Osaka", "Denver", "Lyon", "Gdansk", "Nairobi", "Austin", "Turin", "Malmo",
    "Pune", "Bristol", "Valencia", "Accra", "Leipzig", "Seattle", "Kyoto", "Cork", "Graz", "Bergen", "Tampere",
    "Rotterdam", "Brno", "Adelaide", "Halifax", "Curitiba", "Izmir", "Dundee", "Ghent",
]
TEMPLATES = [
    "Hi team, {name} here from {company}. Could you send {quantity} units of the {product} to our {city} office? Thanks!",
    "Order request: {quantity} x {product}. Deliver to {city}. Contact: {name}, {company}.",
    "Hello, this is {name} ({company}). We need {quantity} {product}s shipped to {city} as soon as possible.",
    "Please ship {quantity} of your {product} to {city}. Billing goes to {company}. Regards, {name}",
    "{company} would like to order {quantity} {product} units for the {city} branch. Best, {name}",
    "Good morning! {name} from {company} again. Our {city} site is short of {product}s, please send {quantity}.",
    "Quick one: can {company} get {quantity} {product}s delivered to {city}? Cheers, {name}",
    "Dear sales, I am {name}, purchasing lead at {company}. Kindly dispatch {quantity} pieces of the {product} to {city}.",
    "Re: restock. {quantity} more {product} units needed in {city}. - {name}, {company}",
    "We at {company} are expanding in {city}. Please prepare {quantity} {product}s. Contact person: {name}.",
    "From: {name} <orders@{domain}>\nCompany: {company}\nWe'd like {quantity} {product}s sent to the {city} warehouse.",
    "Hey, it's {name}. {company} needs {quantity} of the {product} in {city} by next week. Can you do it?",
]


def _domain(company: str) -> str:
    return company.lower().replace(" ", "") + ".example"


def make_row(rng: random.Random, people: list[tuple[str, str]], companies: list[str]) -> dict:
    """One chat example: the request as the user turn, the JSON as the assistant turn."""
    first, last = rng.choice(people)
    company = rng.choice(companies)
    fields = {
        "name": f"{first} {last}",
        "company": company,
        "product": rng.choice(PRODUCTS),
        "quantity": rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 24, 25, 30, 40, 50, 60, 75, 100, 120, 200, 250]),
        "city": rng.choice(CITIES),
    }
    text = rng.choice(TEMPLATES).format(domain=_domain(company), **fields)
    return {
        "messages": [
            {"role": "user", "content": f"{INSTRUCTION}\n\n{text}"},
            {"role": "assistant", "content": json.dumps(fields)},
        ]
    }


def build(seed: int = 7, n_train: int = 400, n_test: int = 40) -> tuple[list[dict], list[dict]]:
    """Train and test rows from disjoint people and companies."""
    rng = random.Random(seed)
    people = [(f, l) for f in FIRST for l in LAST]
    rng.shuffle(people)
    companies = COMPANIES[:]
    rng.shuffle(companies)
    split_p, split_c = int(len(people) * 0.8), int(len(companies) * 0.75)
    train = [make_row(rng, people[:split_p], companies[:split_c]) for _ in range(n_train)]
    test = [make_row(rng, people[split_p:], companies[split_c:]) for _ in range(n_test)]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as one JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).parent
    train_rows, test_rows = build()
    write_jsonl(here / "train.jsonl", train_rows)
    write_jsonl(here / "test.jsonl", test_rows)
    print(f"wrote {len(train_rows)} train and {len(test_rows)} test rows to {here}")
