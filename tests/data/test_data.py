"""Data: reading files, recognising formats, and the token-level loss masks training sees."""

import hashlib
import json

import helpers
import pytest

from studio.config.load import load_recipe
from studio.data import (
    IGNORE,
    Renderer,
    build_data,
    detect_format,
    normalize,
    prepare_tokenizer,
    read_rows,
)
from studio.data.readers import Row
from studio.data.render import CHATML_TEMPLATE
from studio.errors import StudioError

CHAT = [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"}]


def rows(*dicts):
    return [Row(d, f"mem:{i + 1}") for i, d in enumerate(dicts)]


def recipe_for(data_path, tmp_path, **data):
    return load_recipe(helpers.recipe_dict(tmp_path / "model", data_path, tmp_path / "run", data=data))


# ---------------------------------------------------------------- format detection and normalisation


@pytest.mark.parametrize(
    "row, fmt",
    [
        ({"messages": CHAT}, "chat"),
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "chat"),
        ({"instruction": "add", "input": "2 3", "output": "5"}, "alpaca"),
        ({"prompt": "add 2 and 3", "completion": "5"}, "prompt_completion"),
        ({"text": "plain words"}, "text"),
        ({"question": "q", "answer": "a"}, "prompt"),  # GSM8K's spelling: GRPO prompts with a reference
        ({"prompt": "add 2 and 3", "answer": "5"}, "prompt"),
        ({"query": "q", "reply": "a"}, None),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_openai_and_sharegpt_spellings_normalise_to_the_same_messages():
    openai = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]}
    sharegpt = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "U"}, {"from": "gpt", "value": "A"}]}
    fmt_a, (a,) = normalize(rows(openai))
    fmt_b, (b,) = normalize(rows(sharegpt))
    assert fmt_a == fmt_b == "chat"
    assert a.messages == b.messages == tuple(openai["messages"])


def test_alpaca_joins_instruction_and_input():
    _, (with_input, without) = normalize(rows({"instruction": "Add.", "input": "2 3", "output": "5"}, {"instruction": "Say hi.", "input": "", "output": "hi"}))
    assert with_input.messages == ({"role": "user", "content": "Add.\n\n2 3"}, {"role": "assistant", "content": "5"})
    assert without.messages[0] == {"role": "user", "content": "Say hi."}


def test_prompt_completion_strings_and_message_lists():
    _, (strings,) = normalize(rows({"prompt": "add 2 and 3", "completion": "5"}))
    assert strings.messages == tuple(CHAT)
    lists = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "add 2 and 3"}], "completion": [{"role": "assistant", "content": "5"}]}
    fmt, (msgs,) = normalize(rows(lists))
    assert fmt == "prompt_completion"
    assert msgs.messages == ({"role": "system", "content": "S"}, *CHAT)


def test_text_rows_stay_text():
    fmt, (ex,) = normalize(rows({"text": "once upon a time"}))
    assert fmt == "text" and ex.text == "once upon a time" and ex.messages is None


def test_columns_mapping_renames_before_detection():
    fmt, (ex,) = normalize(rows({"question": "add 2 and 3", "answer": "5"}), columns={"instruction": "question", "output": "answer"})
    assert fmt == "alpaca"
    assert ex.messages == tuple(CHAT)


def test_columns_mapping_to_a_missing_column_fails_with_the_row():
    with pytest.raises(StudioError, match="column 'reply'") as err:
        normalize(rows({"question": "q", "answer": "a"}), columns={"output": "reply"})
    assert err.value.where == "mem:1"


def test_undetectable_format_is_a_studio_error():
    with pytest.raises(StudioError, match="cannot detect the data format"):
        normalize(rows({"query": "q", "reply": "a"}))


def test_system_prompt_is_prepended_only_where_missing():
    with_sys = {"messages": [{"role": "system", "content": "own"}, *CHAT]}
    _, (a, b) = normalize(rows({"messages": CHAT}, with_sys), system_prompt="default")
    assert a.messages[0] == {"role": "system", "content": "default"}
    assert b.messages[0] == {"role": "system", "content": "own"}


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}], "unknown role 'wizard'"),
        ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}], "empty or non-text content"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None}], "empty or non-text content"),
        ([{"role": "user", "content": "only a question"}], "no assistant message"),
        ([], "non-empty list"),
    ],
)
def test_bad_messages_are_studio_errors_naming_the_row(messages, message):
    with pytest.raises(StudioError, match=message) as err:
        normalize(rows({"messages": CHAT}, {"messages": messages}))
    assert err.value.where == "mem:2"


# ---------------------------------------------------------------- readers


def test_jsonl_reader_skips_blank_lines_and_names_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    got = read_rows(path)
    assert [r.data for r in got] == [{"text": "a"}, {"text": "b"}]
    assert [r.where for r in got] == [f"{path}:1", f"{path}:3"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c",,}\n', encoding="utf-8")
    with pytest.raises(StudioError) as err:
        read_rows(path)
    assert f"{path}:3" in str(err.value)
    assert "not valid JSON" in str(err.value)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(StudioError, match="not an object") as err:
        read_rows(path)
    assert f"{path}:2" in str(err.value)


def test_json_list_and_object_holding_one_list(tmp_path):
    items = [{"text": "a"}, {"text": "b"}]
    plain = tmp_path / "list.json"
    plain.write_text(json.dumps(items), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 1, "data": items}), encoding="utf-8")
    assert [r.data for r in read_rows(plain)] == items
    assert [r.data for r in read_rows(wrapped)] == items
    assert read_rows(plain)[1].where == f"{plain} [item 1]"


def test_csv_reader(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,input,output\nAdd.,"2, 3",5\nSay hi.,,hi\n', encoding="utf-8")
    got = read_rows(path)
    assert got[0].data == {"instruction": "Add.", "input": "2, 3", "output": "5"}
    assert got[1].where == f"{path}:3"
    fmt, examples = normalize(got)
    assert fmt == "alpaca" and examples[0].messages[0]["content"] == "Add.\n\n2, 3"


def test_csv_row_with_too_many_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text\na\nb,c\n", encoding="utf-8")
    with pytest.raises(StudioError, match="more fields") as err:
        read_rows(path)
    assert f"{path}:3" in str(err.value)


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]), path)
    got = read_rows(path)
    assert [r.data for r in got] == [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    assert normalize(got)[0] == "prompt_completion"


def test_datasets_save_to_disk_dir(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(helpers.chat_rows(3)).save_to_disk(str(folder))
    got = read_rows(folder)
    assert len(got) == 3
    assert got[0].data["messages"][-1] == {"role": "assistant", "content": "1"}
    assert normalize(got)[0] == "chat"


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "d.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(StudioError, match="unsupported dataset file type"):
        read_rows(tmp_path / "d.txt")
    with pytest.raises(StudioError, match="dataset not found"):
        read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(StudioError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- loss masks at token level


def trained(encoded):
    return [label for label in encoded.labels if label != IGNORE]


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def encode(tok, messages, train_on="assistant", max_length=256):
    from studio.data import Example

    return Renderer(tok, max_length, train_on).encode(Example("mem:1", messages=tuple(messages)))


def test_chatml_trains_exactly_the_answer_and_its_end_of_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    messages = [{"role": "system", "content": "You are a calculator."}, *CHAT]
    enc = encode(tok, messages)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert enc.input_ids == ids_of(tok, full)  # ChatML already ends the turn with EOS: nothing inserted
    answer = ids_of(tok, "5") + [tok.eos_token_id]
    assert trained(enc) == answer
    # The trained tokens are the contiguous tail of the assistant turn: after "<|im_start|>assistant\n".
    prompt_len = len(ids_of(tok, tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)))
    assert enc.labels[:prompt_len] == [IGNORE] * prompt_len
    assert enc.labels[prompt_len : prompt_len + len(answer)] == answer
    assert all(label == IGNORE for label in enc.labels[prompt_len + len(answer) :])  # the trailing "\n"
    assert enc.labels[prompt_len : prompt_len + len(answer)] == enc.input_ids[prompt_len : prompt_len + len(answer)]


def test_every_assistant_turn_of_a_multi_turn_chat_is_trained(tiny_tokenizer):
    tok = tiny_tokenizer
    messages = [*CHAT, {"role": "user", "content": "add 4 and 4"}, {"role": "assistant", "content": "8"}]
    enc = encode(tok, messages)
    eos = tok.eos_token_id
    assert trained(enc) == ids_of(tok, "5") + [eos] + ids_of(tok, "8") + [eos]
    # The second user turn, between the two answers, is not trained.
    second_user = ids_of(tok, "add 4 and 4")
    start = next(i for i in range(len(enc.input_ids)) if enc.input_ids[i : i + len(second_user)] == second_user)
    assert enc.labels[start : start + len(second_user)] == [IGNORE] * len(second_user)


def test_eos_is_inserted_when_the_template_does_not_end_the_turn_with_it():
    tok = prepare_tokenizer(helpers.make_tokenizer(None), helpers.PLAIN_TEMPLATE)
    eos = tok.eos_token_id
    messages = [*CHAT, {"role": "user", "content": "add 4 and 4"}, {"role": "assistant", "content": "8"}]
    enc = encode(tok, messages)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert "<|im_end|>" not in full
    assert trained(enc) == ids_of(tok, " 5") + [eos] + ids_of(tok, " 8") + [eos]
    assert len(enc.input_ids) == len(ids_of(tok, full)) + 2
    # Each inserted EOS sits right after its answer and carries the loss.
    for answer in (" 5", " 8"):
        answer_ids = ids_of(tok, answer)
        at = next(i for i in range(len(enc.input_ids)) if enc.input_ids[i : i + len(answer_ids)] == answer_ids) + len(answer_ids)
        assert enc.input_ids[at] == eos and enc.labels[at] == eos


def test_a_conversation_opening_with_the_assistant_trains_only_its_answers(tiny_tokenizer):
    # e.g. ShareGPT rows where the bot greets first: the "<|im_start|>assistant\n" header of the first
    # turn is template, not answer, and must not carry the loss any more than the later headers do.
    tok = tiny_tokenizer
    messages = [{"role": "assistant", "content": "Hi!"}, *CHAT]
    enc = encode(tok, messages)
    assert trained(enc) == ids_of(tok, "Hi!") + [tok.eos_token_id] + ids_of(tok, "5") + [tok.eos_token_id]


SHOUTING = "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}{{ m['content'] | upper }}{% endif %}{% endfor %}"
TWO_TURNS = [*CHAT, {"role": "user", "content": "add 1 and 1"}, {"role": "assistant", "content": "2"}]


def test_template_that_rewrites_earlier_turns_is_a_studio_error():
    tok = prepare_tokenizer(helpers.make_tokenizer(None), SHOUTING)
    with pytest.raises(StudioError, match="renders earlier turns differently") as err:
        encode(tok, TWO_TURNS)
    assert "train_on: all" in err.value.fix


def test_train_on_all_works_with_a_template_that_rewrites_earlier_turns():
    # The error above advises `data.train_on: all`; with it no assistant spans are needed, so it must work.
    tok = prepare_tokenizer(helpers.make_tokenizer(None), SHOUTING)
    enc = encode(tok, TWO_TURNS, train_on="all")
    assert enc.labels == enc.input_ids
    assert enc.input_ids[:-1] == ids_of(tok, tok.apply_chat_template(TWO_TURNS, tokenize=False))
    assert enc.input_ids[-1] == tok.eos_token_id


def test_train_on_all_trains_every_token_and_ends_with_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    enc = encode(tok, [{"role": "system", "content": "S"}, *CHAT], train_on="all")
    assert enc.labels == enc.input_ids
    assert enc.input_ids[-1] == tok.eos_token_id


def test_text_rows_are_trained_whole_with_eos(tiny_tokenizer):
    from studio.data import Example

    enc = Renderer(tiny_tokenizer, 64).encode(Example("mem:1", text="what is the sum"))
    assert enc.input_ids == ids_of(tiny_tokenizer, "what is the sum") + [tiny_tokenizer.eos_token_id]
    assert enc.labels == enc.input_ids


def test_chatml_fallback_for_a_tokenizer_without_template():
    tok = helpers.make_tokenizer(None)
    assert not tok.chat_template
    prepare_tokenizer(tok)
    assert tok.chat_template == CHATML_TEMPLATE
    rendered = Renderer(tok, 64).conversation_text(CHAT)
    assert rendered == "<|im_start|>user\nadd 2 and 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    assert trained(encode(tok, CHAT)) == ids_of(tok, "5") + [tok.eos_token_id]


def test_model_without_template_loads_with_chatml_fallback(tiny_models):
    from studio.modeling.loading import load_tokenizer

    tok = load_tokenizer(tiny_models("llama", None))
    assert tok.chat_template == CHATML_TEMPLATE
    assert tok.pad_token_id is not None


def test_recipe_template_overrides_the_tokenizer_one(tiny_tokenizer):
    tok = prepare_tokenizer(helpers.make_tokenizer(helpers.CHATML), helpers.PLAIN_TEMPLATE)
    assert Renderer(tok, 64).prompt_text(CHAT[:1]) == "user: add 2 and 3\nBot:"


# ---------------------------------------------------------------- build_data: truncation, manifest, validation split


def test_truncation_drops_rows_without_trained_tokens_and_counts_them(tmp_path, tiny_tokenizer):
    long_prompt = " ".join(["what is the sum of 1 and 2"] * 6)
    data = helpers.write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": CHAT},  # fits
            {"messages": [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "3"}]},  # answer cut off
            {"messages": [{"role": "user", "content": "add"}, {"role": "assistant", "content": long_prompt}]},  # answer cut short
        ],
    )
    built = build_data(recipe_for(data, tmp_path, max_length=16), tiny_tokenizer)
    train = built.manifest["train"]
    assert (built.manifest["rows"], train["examples"], train["dropped"], train["truncated"]) == (3, 2, 1, 1)
    assert train["dropped_where"] == [f"{data}:2"]
    assert all(len(e.input_ids) <= 16 for e in built.train)
    assert [e.truncated for e in built.train] == [False, True]
    assert train["lengths"]["max"] <= 16


def test_no_trained_tokens_at_all_is_a_studio_error(tmp_path, tiny_tokenizer):
    long_prompt = " ".join(["what is the sum of 1 and 2"] * 6)
    data = helpers.write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "3"}]}])
    with pytest.raises(StudioError, match="no training example"):
        build_data(recipe_for(data, tmp_path, max_length=16), tiny_tokenizer)


def test_manifest_sha256_is_the_file_hash(tmp_path, tiny_data, tiny_tokenizer):
    built = build_data(recipe_for(tiny_data, tmp_path), tiny_tokenizer)
    assert built.manifest["sha256"] == hashlib.sha256(tiny_data.read_bytes()).hexdigest()
    assert built.manifest["format"] == "chat"
    assert built.manifest["rows"] == 24 and built.manifest["train"]["examples"] == 24


def test_val_split_is_seeded_and_disjoint(tmp_path, tiny_data, tiny_tokenizer):
    def split(seed):
        raw = helpers.recipe_dict(tmp_path / "m", tiny_data, tmp_path / "r", data={"val_split": 0.25}, train={"seed": seed})
        built = build_data(load_recipe(raw), tiny_tokenizer)
        return [e.where for e in built.train], [e.where for e in built.val]

    train_a, val_a = split(1)
    assert len(val_a) == 6 and len(train_a) == 18
    assert not set(train_a) & set(val_a)
    assert set(train_a) | set(val_a) == {f"{tiny_data}:{i}" for i in range(1, 25)}
    assert split(1) == (train_a, val_a)  # same seed, same split
    assert split(2)[1] != val_a  # another seed, another split
