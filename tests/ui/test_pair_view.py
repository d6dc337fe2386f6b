"""The Data tab on preference data: the pair is shown side by side, prompt rendered with the chat template
once, chosen on the left and rejected on the right with token counts, user text escaped."""

import json
from html.parser import HTMLParser
from pathlib import Path

import helpers
import pytest

from studio.config.load import load_recipe
from studio.ui.tabs import data as data_tab

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "order_extraction" / "preferences.jsonl"
SECTIONS = ("pair-prompt", "pair-chosen", "pair-rejected")


class _Sections(HTMLParser):
    """The unescaped text inside each pair-* div (and the whole text), from the sample HTML."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str | None] = []
        self.text = {name: "" for name in (*SECTIONS, "all")}
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "div":
            self.stack.append(next((c for c in (dict(attrs).get("class") or "").split() if c in SECTIONS), None))

    def handle_endtag(self, tag):
        if tag == "div":
            self.stack.pop()

    def handle_data(self, data):
        self.text["all"] += data
        for name in filter(None, self.stack):
            self.text[name] += data


def sections(sample_html: str) -> _Sections:
    parsed = _Sections()
    parsed.feed(sample_html)
    return parsed


def raw_for(model_dir, data_path, tmp_path, **data) -> dict:
    raw = helpers.recipe_dict(model_dir, data_path, tmp_path / "out", method="dpo", preference={"adapter": "lora"})
    raw["data"].update(data)
    return load_recipe(raw).to_yaml_dict()


def counts(summary: str) -> tuple[int, int, int]:
    line = summary.split("sample row", 1)[1]
    return tuple(int(line.split(f"{key} ", 1)[1].split()[0].rstrip(",")) for key in ("prompt", "chosen", "rejected"))


@pytest.mark.parametrize("index", [0, 7])
def test_shipped_preferences_show_the_pair_side_by_side(tiny_llama_dir, tiny_tokenizer, tmp_path, index):
    row = json.loads(SHIPPED.read_text().splitlines()[index])
    summary, warnings, sample, histogram = data_tab.inspect(str(SHIPPED), "auto", "", raw_for(tiny_llama_dir, SHIPPED, tmp_path, max_length=1024), index)
    assert "**160 rows** · format **preference** (detected: preference)" in summary and f"sample row {index}" in summary
    shown = sections(sample).text
    assert row["chosen"] in shown["pair-chosen"] and row["chosen"] not in shown["pair-rejected"]
    assert row["rejected"] in shown["pair-rejected"] and row["rejected"] not in shown["pair-chosen"]
    # The prompt once, above both answers, as the chat template renders it for generation.
    expected_prompt = tiny_tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True)
    assert expected_prompt in shown["pair-prompt"] and shown["all"].count(row["prompt"]) == 1
    # Left column first, and each column names its own token count.
    assert sample.index("pair-chosen") < sample.index("pair-rejected")
    prompt_n, chosen_n, rejected_n = counts(summary)
    assert prompt_n == len(tiny_tokenizer(expected_prompt, add_special_tokens=False)["input_ids"])
    assert f"chosen · {chosen_n} tokens" in shown["pair-chosen"] and f"rejected · {rejected_n} tokens" in shown["pair-rejected"]
    # Each count is of its own answer (through the end-of-turn token) as it continues the prompt.
    for n, answer in ((chosen_n, row["chosen"]), (rejected_n, row["rejected"])):
        assert n == len(tiny_tokenizer(expected_prompt + answer + "<|im_end|>", add_special_tokens=False)["input_ids"]) - prompt_n > 0
    assert "160 rows" in histogram and "longer than max_length" not in warnings


def test_short_limit_warns_about_pairs_it_cuts(tiny_llama_dir, tmp_path):
    summary, warnings, _, histogram = data_tab.inspect(str(SHIPPED), "auto", "", raw_for(tiny_llama_dir, SHIPPED, tmp_path, max_length=64), 0)
    assert "truncated" in summary and "160 row(s) longer than max_length 64" in warnings and "max_length 64" in histogram


def test_chat_spelled_pairs_render_with_the_template_and_escape_user_text(tiny_llama_dir, tiny_tokenizer, tmp_path):
    script = "<script>alert('x')</script>"
    system = {"role": "system", "content": "You are a calculator."}
    rows = [
        {"chosen": [system, {"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"}],
         "rejected": [system, {"from": "human", "value": "add 2 and 3"}, {"from": "gpt", "value": "6"}]},
        {"prompt": [{"role": "user", "content": f"add 1 and 1 {script}"}],
         "chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": f"3 {script}"}]},
    ]
    path = helpers.write_jsonl(tmp_path / "chat-prefs.jsonl", rows)
    raw = raw_for(tiny_llama_dir, path, tmp_path)

    summary, _, sample, _ = data_tab.inspect(str(path), "auto", "", raw, 0)
    shown = sections(sample).text
    expected_prompt = tiny_tokenizer.apply_chat_template(rows[0]["chosen"][:2], tokenize=False, add_generation_prompt=True)
    assert "format **preference**" in summary and expected_prompt in shown["pair-prompt"]
    assert shown["all"].count("You are a calculator.") == 1 and shown["all"].count("add 2 and 3") == 1
    assert shown["pair-chosen"].rstrip().endswith("5<|im_end|>") and shown["pair-rejected"].rstrip().endswith("6<|im_end|>")

    _, _, sample, _ = data_tab.inspect(str(path), "auto", "", raw, 1)
    parsed = sections(sample)
    assert "script" not in parsed.tags and "<script>" not in sample and "&lt;script&gt;" in sample
    assert script in parsed.text["pair-prompt"] and f"3 {script}" in parsed.text["pair-rejected"] and script not in parsed.text["pair-chosen"]


def test_supervised_data_keeps_the_token_view(tiny_raw, tiny_data):
    _, _, sample, _ = data_tab.inspect(str(tiny_data), "auto", "", tiny_raw, 0)
    assert "class='trained'" in sample and "pair-view" not in sample
