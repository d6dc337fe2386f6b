"""Hostile input: random and mutated recipes and datasets end in success or one clear StudioError, never a crash.

Every property test runs a fixed number of deterministic (derandomized) cases and asserts that number, so the
test id says how many cases were tried (e.g. `test_recipe_files_fuzzed[400-cases]`); `-rA` also prints the
outcome breakdown (`ok` / `StudioError`) of each one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import helpers
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.cli import main
from studio.config.load import load_recipe, parse_override
from studio.data import build_data, normalize, read_rows
from studio.data.render import Renderer
from studio.errors import StudioError

RECIPE_CASES = 400
CLI_CASES = 60
DATA_CASES = {"jsonl": 250, "json": 120, "csv": 150, "parquet": 40}
ROW_CASES = 200
LENGTH_CASES = 40


def _settings(n: int):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


def _outcome(fn, names: tuple[str, ...], seen: Counter):
    """Run fn; success, or a StudioError naming one of `names` with a fix. Anything else propagates (fails)."""
    try:
        result = fn()
    except StudioError as exc:
        text = str(exc)
        assert text.startswith("error: ") and exc.what, text
        assert exc.fix, f"no fix in: {text}"
        assert any(n in text for n in names), f"error does not name {names}: {text}"
        seen["StudioError"] += 1
        return exc
    seen["ok"] += 1
    return result


def _report(name: str, seen: Counter, expected: int, record_property) -> None:
    total = sum(seen.values())
    record_property("cases", total)
    print(f"{name}: {total} cases tried: {dict(seen)}")
    assert total == expected, f"{name}: {total} cases tried, expected {expected}: {dict(seen)}"


# --- recipes -----------------------------------------------------------------------------------------------

NASTY_VALUES = [
    "9" * 5000, "1" + "0" * 400, "-1", "0", "1.0e+400", ".nan", "nan", "NaN", "-.inf", "inf", "true", "false", "null", "~",
    "[]", "{}", "''", '"\\0"', "2001-02-30", "2001-02-03", "!!int x", "!!float y", "!!binary '%%%'", "*nope", "&a 1",
    "0x1F", "0o17", "1_000", "1e-4", "'" + "x" * 3000 + "'", "[[[[1]]]]", "{a: {b: {c: 1}}}", "!!python/object:os.system x",
    "!!set {a, b}", "'../../etc/passwd'", "/dev/null", "- a\n- b", "|\n  multi\n  line", "\"\\uD800\"", "@bad", "`bad`",
]
SECTIONS = ["model", "method", "lora", "quant", "data", "train", "eval", "output"]


def _base_recipe_text(tmp: Path, data: Path) -> str:
    raw = helpers.recipe_dict(tmp / "no-model", data, tmp / "runs" / "{name}")
    return yaml.safe_dump(raw, sort_keys=False)


@st.composite
def recipe_bytes(draw, base: str) -> bytes:
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "text", "binary"]))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "binary":
        return draw(st.binary(max_size=300))
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["value", "value", "unknown-key", "drop-indent", "duplicate", "swap-type", "delete"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(NASTY_VALUES) | st.text(max_size=20).map(json.dumps))}"
        elif op == "unknown-key":
            name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
            indent = draw(st.sampled_from(["", "  "]))
            lines.insert(i + 1, f"{indent}{name}: {draw(st.sampled_from(NASTY_VALUES[:12]))}")
        elif op == "drop-indent":
            lines[i] = lines[i].lstrip()
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap-type":
            lines.insert(i + 1, f"{draw(st.sampled_from(SECTIONS))}: {draw(st.sampled_from(NASTY_VALUES))}")
        elif op == "delete" and len(lines) > 1:
            del lines[i]
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    tail = draw(st.sampled_from(["none", "truncate", "garbage", "bad-utf8"]))
    if tail == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif tail == "garbage":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif tail == "bad-utf8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe\xc3" + data[at:]
    return data


@pytest.mark.parametrize("n", [RECIPE_CASES], ids=lambda n: f"{n}-cases")
def test_recipe_files_fuzzed(n, tmp_path, tiny_data, record_property):
    base = _base_recipe_text(tmp_path, tiny_data)
    path = tmp_path / "fuzz.yaml"
    seen: Counter = Counter()

    @_settings(n)
    @given(recipe_bytes(base))
    def run(content):
        path.write_bytes(content)
        _outcome(lambda: load_recipe(path), (str(path),), seen)

    run()
    _report("recipe files", seen, n, record_property)
    assert seen["StudioError"] > n // 4 and seen["ok"] > 0, dict(seen)


@pytest.mark.parametrize("n", [RECIPE_CASES // 2], ids=lambda n: f"{n}-cases")
def test_overrides_fuzzed(n, tiny_data, tmp_path, record_property):
    base = helpers.recipe_dict(tmp_path / "m", tiny_data, tmp_path / "out")
    seen: Counter = Counter()
    keys = [f"{s}.{k}" for s, v in base.items() if isinstance(v, dict) for k in v] + ["lora.ranq", "x", "train.lr.x"]

    @_settings(n)
    @given(st.sampled_from(keys), st.sampled_from(NASTY_VALUES) | st.text(max_size=30))
    def run(key, value):
        item = f"{key}={value}"
        _outcome(lambda: load_recipe(base, [item]), ("--set", key), seen)

    run()
    _report("--set overrides", seen, n, record_property)


def test_recipe_known_hostile_cases_name_file_and_line(tmp_path):
    """The cases the fuzzer found: each is one StudioError with the file (and line where YAML has one)."""
    laughs = "a: &a {x: 1, y: 2}\n" + "".join(
        f"b{i}: &b{i} {{" + ", ".join(f"k{j}: *{'a' if i == 0 else f'b{i - 1}'}" for j in range(10)) + "}\n" for i in range(9)
    )
    cases = {
        "alias-bomb": (laughs, "alias", ":2"),
        "recursive-alias": ("a: &a {b: *a}\n", "alias", ":1"),
        "deep-list": ("a: " + "[" * 50000 + "]" * 50000 + "\n", "nested", ":1"),
        "deep-map": "".join("  " * i + f"k{i}:\n" for i in range(100)),
        "huge-int": ("lora:\n  rank: " + "9" * 5000 + "\n", "cannot be read", ""),
        "bad-date": ("model:\n  name: 2001-02-30\n", "cannot be read", ""),
        "bad-int-tag": ("lora:\n  rank: !!int abc\n", "cannot be read", ""),
        "nul-path": ('data:\n  path: "a\\0b"\n', "NUL", ":2 (key data.path)"),
        "nul-in-list": ('lora:\n  targets: ["q\\0"]\n', "NUL", ":2 (key lora.targets)"),
    }
    for name, case in cases.items():
        text, fragment, loc = case if isinstance(case, tuple) else (case, "nested", ":")
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(StudioError) as info:
            load_recipe(path)
        assert fragment in str(info.value) and f"{path}{loc}" in str(info.value), (name, str(info.value))
        assert info.value.fix


def test_recipe_path_too_long_for_the_file_system(tmp_path):
    with pytest.raises(StudioError, match="not found"):
        load_recipe(tmp_path / ("a" * 5000 + ".yaml"))
    # A data path or model path too long to exist resolves without a crash; the reader then says what is wrong.
    recipe = load_recipe(helpers.recipe_dict(tmp_path / ("m" * 5000), tmp_path / ("d" * 5000 + ".jsonl"), tmp_path / "o"))
    with pytest.raises(StudioError, match="cannot be used|not found"):
        read_rows(recipe.data.path)


@pytest.mark.parametrize("item", ["model.name=2001-02-30", "lora.rank=" + "9" * 5000, "train.seed=!!int x", "lora.rank=" + "[" * 5000], ids=["date", "digits", "tag", "deep"])
def test_override_values_python_cannot_build_do_not_crash(item, tiny_data, tmp_path):
    parse_override(item)  # YAML that Python cannot build (2001-02-30, `!!int x`) is kept as text
    try:
        load_recipe(helpers.recipe_dict(tmp_path, tiny_data, tmp_path), [item])
    except StudioError as exc:
        assert f"--set {item}" in str(exc) and exc.fix


# --- datasets ----------------------------------------------------------------------------------------------

ROLES = ["user", "assistant", "system", "human", "gpt", "USER", "tool", "function", "", "narrator", None, 3]
TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "a\u2028b", "x\x85y", "\x00", "\ud7ff", "🙂" * 5, "{{ 7*7 }}", "{% raw %}", "<|im_end|>"]),
    st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True),
)


def _message():
    good = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "human", "gpt"]), "content": st.text(min_size=1, max_size=30)})
    odd = st.fixed_dictionaries({}, optional={"role": st.sampled_from(ROLES), "content": TEXTS, "from": st.sampled_from(ROLES), "value": TEXTS})
    return st.one_of(good, good, good, odd)


def _row():
    chat = st.fixed_dictionaries({"messages": st.one_of(st.lists(_message(), max_size=4), TEXTS, st.just([]))})
    sharegpt = st.fixed_dictionaries({"conversations": st.lists(_message(), min_size=1, max_size=3)})
    alpaca = st.fixed_dictionaries({"instruction": TEXTS, "output": TEXTS}, optional={"input": TEXTS})
    prompt = st.fixed_dictionaries({"prompt": st.one_of(TEXTS, st.lists(_message(), max_size=2)), "completion": st.one_of(TEXTS, st.lists(_message(), max_size=2))})
    text = st.fixed_dictionaries({"text": TEXTS})
    good = st.builds(lambda a, b: {"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}]}, st.text(min_size=1, max_size=20).filter(str.strip), st.text(min_size=1, max_size=20).filter(str.strip))
    other = st.dictionaries(st.text(max_size=8), TEXTS, max_size=3)
    return st.one_of(good, good, good, good, chat, sharegpt, alpaca, prompt, text, other)


def _serialize(fmt: str, rows: list[dict], tmp: Path) -> Path:
    path = tmp / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8", errors="surrogatepass")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8", errors="surrogatepass")
    elif fmt == "csv":
        flat = [{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in r.items()} for r in rows]
        header = list(dict.fromkeys(k for r in flat for k in r)) or ["text"]
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(flat)
        path.write_text(out.getvalue(), encoding="utf-8", errors="surrogatepass", newline="")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in r.items()} for r in rows]
        header = list(dict.fromkeys(k for r in flat for k in r)) or ["text"]
        table = pa.table({h: [r.get(h) for r in flat] for h in header}) if flat else pa.table({"text": pa.array([], pa.string())})
        pq.write_table(table, path)
    return path


@st.composite
def dataset_mutation(draw):
    return draw(st.sampled_from(["none", "none", "none", "none", "truncate", "bad-line-middle", "flip-byte", "bad-utf8", "empty", "binary", "drop-column", "nul", "blank-lines"])), draw(st.randoms(use_true_random=False))


def _mutate(path: Path, fmt: str, how: str, rnd) -> None:
    data = path.read_bytes()
    if how == "truncate":
        data = data[: rnd.randint(0, len(data))]
    elif how == "bad-line-middle":
        lines = data.split(b"\n")
        lines.insert(len(lines) // 2, rnd.choice([b"{not json", b"[1, 2]", b"\"text\"", b"{\"a\": 1,}", b"a,b,c,d,e,f", b"\"unclosed"]))
        data = b"\n".join(lines)
    elif how == "flip-byte" and data:
        i = rnd.randrange(len(data))
        data = data[:i] + bytes([data[i] ^ (1 << rnd.randrange(8))]) + data[i + 1:]
    elif how == "bad-utf8":
        i = rnd.randint(0, len(data))
        data = data[:i] + b"\xc3\x28\xff" + data[i:]
    elif how == "empty":
        data = b""
    elif how == "binary":
        data = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 200)))
    elif how == "drop-column" and fmt == "csv":
        lines = data.split(b"\n")
        for j in range(1, len(lines)):
            if lines[j] and rnd.random() < 0.5:
                lines[j] = lines[j].rsplit(b",", 1)[0]
        data = b"\n".join(lines)
    elif how == "nul":
        i = rnd.randint(0, len(data))
        data = data[:i] + b"\x00" + data[i:]
    elif how == "blank-lines":
        data = b"\n\n" + data.replace(b"\n", b"\n\r\n", 1)
    path.write_bytes(data)


@pytest.mark.parametrize("fmt, n", list(DATA_CASES.items()), ids=[f"{f}-{n}-cases" for f, n in DATA_CASES.items()])
def test_dataset_files_fuzzed(fmt, n, tmp_path, record_property):
    seen: Counter = Counter()
    line_errors: Counter = Counter()

    @_settings(n)
    @given(st.lists(_row(), max_size=6), dataset_mutation())
    def run(rows, mutation):
        path = _serialize(fmt, rows, tmp_path)
        _mutate(path, fmt, *mutation)
        result = _outcome(lambda: normalize(read_rows(path)), (str(path),), seen)
        if isinstance(result, StudioError) and re.search(re.escape(str(path)) + r"(:\d+| \[(item|row) \d+\])", result.where or ""):
            line_errors["located"] += 1
        elif isinstance(result, tuple):
            fmt_name, examples = result
            assert examples and all(e.where.startswith(str(path)) for e in examples)

    run()
    _report(f"{fmt} datasets", seen, n, record_property)
    assert seen["ok"] > 0 and seen["StudioError"] > 0, dict(seen)
    if fmt != "parquet":
        assert line_errors["located"] > 0  # row-level errors point at a line or item


def test_dataset_known_hostile_cases(tmp_path):
    """Found by the fuzzer: each is a StudioError naming file (and line), or reads correctly."""
    bad = {
        "huge-int.jsonl": ('{"text": "a"}\n{"text": ' + "9" * 5000 + "}\n", ":2"),
        "deep.jsonl": ('{"text": ' + "[" * 100000 + "]" * 100000 + "}\n", ":1"),
        "huge-int.json": ('[{"text": ' + "9" * 5000 + "}]", ""),
        "deep.json": ("[" * 100000 + "]" * 100000, ""),
        "bad-middle.jsonl": ('{"text": "a"}\n{"text": "b"\n{"text": "c"}\n', ":2"),
        "missing-column.csv": ("instruction,output\nq,a\nq2\n", ":3"),
    }
    for name, (content, loc) in bad.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(StudioError) as info:
            normalize(read_rows(path))
        assert f"{path}{loc}" in str(info.value) and info.value.fix, (name, str(info.value))
    with pytest.raises(StudioError, match="no rows"):
        normalize([])
    with pytest.raises(StudioError, match="cannot be used"):
        read_rows(tmp_path / ("x" * 5000 + ".jsonl"))


def test_jsonl_line_separators_inside_strings_are_text(tmp_path):
    # U+2028 and U+0085 are legal unescaped inside JSON strings; splitting lines on them broke valid files.
    path = tmp_path / "seps.jsonl"
    rows = [{"text": "a\u2028b"}, {"text": "c\x85d"}, {"text": "e"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    read = read_rows(path)
    assert [r.data for r in read] == rows
    assert [r.where for r in read] == [f"{path}:1", f"{path}:2", f"{path}:3"]


def test_csv_keeps_line_breaks_inside_quoted_fields_and_long_fields(tmp_path):
    path = tmp_path / "multi.csv"
    long_text = "word " * 40000  # 200 KB: above csv's default field limit; long rows are truncated later, not refused
    path.write_text(f'prompt,completion\n"line one\nline two","a\u2028b"\nshort,"{long_text}"\n', encoding="utf-8", newline="")
    rows = read_rows(path)
    assert rows[0].data == {"prompt": "line one\nline two", "completion": "a\u2028b"}
    assert rows[1].data["completion"] == long_text
    assert rows[0].where == f"{path}:3" and rows[1].where == f"{path}:4"


@pytest.mark.parametrize("n", [ROW_CASES], ids=lambda n: f"{n}-cases")
def test_chat_rows_fuzzed_render_or_fail_clearly(n, tiny_tokenizer, tmp_path, record_property):
    """Random chats (unknown roles, empty content, odd text) through normalize and the renderer."""
    from studio.data.readers import Row

    renderer = Renderer(tiny_tokenizer, max_length=32)
    seen: Counter = Counter()

    @_settings(n)
    @given(st.lists(_message(), min_size=1, max_size=4))
    def run(messages):
        row = Row({"messages": messages}, f"{tmp_path}/chat.jsonl:7")

        def go():
            _, examples = normalize([row])
            enc = renderer.encode(examples[0])
            assert len(enc.input_ids) == len(enc.labels) <= 32
            return enc

        result = _outcome(go, ("chat.jsonl:7",), seen)
        if isinstance(result, StudioError):
            assert "message" in result.what or "assistant" in result.what or "template" in result.what, result.what

    run()
    _report("chat rows", seen, n, record_property)
    assert seen["ok"] > 0 and seen["StudioError"] > 0, dict(seen)


@pytest.mark.parametrize("n", [LENGTH_CASES], ids=lambda n: f"{n}-cases")
def test_rows_longer_than_max_length_are_truncated_and_counted(n, tiny_tokenizer, tmp_path, record_property):
    seen: Counter = Counter()
    path = tmp_path / "long.jsonl"

    @_settings(n)
    @given(st.lists(st.integers(1, 400), min_size=1, max_size=5), st.sampled_from([12, 24, 64]))
    def run(lengths, max_length):
        rows = [{"messages": [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": "3 " * k}]} for k in lengths]
        helpers.write_jsonl(path, rows)
        recipe = load_recipe(helpers.recipe_dict(tmp_path, path, tmp_path / "out", data={"max_length": max_length}))
        renderer = Renderer(tiny_tokenizer, max_length)
        full = [len(renderer._encode_chat(ex)[0]) for ex in normalize(read_rows(path))[1]]

        def go():
            return build_data(recipe, tiny_tokenizer)

        built = _outcome(go, (str(path),), seen)
        if isinstance(built, StudioError):
            assert "no training example" in built.what  # every row lost its answer to truncation
            return
        info = built.manifest["train"]
        assert info["examples"] + info["dropped"] == len(lengths)
        # A row is dropped only when truncation cut away all of its answer, so kept-and-truncated plus dropped
        # is exactly the number of rows longer than max_length.
        assert info["truncated"] + info["dropped"] == sum(f > max_length for f in full)
        assert info["truncated"] == sum(e.truncated for e in built.train)
        assert all(len(e.input_ids) <= max_length for e in built.train)

    run()
    _report("long rows", seen, n, record_property)
    assert seen["ok"] > 0


# --- the CLI -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [CLI_CASES], ids=lambda n: f"{n}-cases")
def test_cli_validate_fuzzed_exits_2_without_traceback(n, tmp_path, tiny_data, capsys, record_property):
    base = _base_recipe_text(tmp_path, tiny_data)
    path = tmp_path / "cli.yaml"
    seen: Counter = Counter()

    @_settings(n)
    @given(recipe_bytes(base), st.booleans())
    def run(content, as_json):
        path.write_bytes(content)
        capsys.readouterr()
        code = main(["validate", str(path)] + (["--json"] if as_json else []))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        if code == 0:
            seen["exit 0"] += 1
            assert err == "" or "error:" not in err
        else:
            assert code == 2, (code, err)
            assert err.startswith("error: ") and "fix:" in err, err
            assert str(path) in err or str(tiny_data) in err, err
            if as_json:
                assert json.loads(out.strip().splitlines()[-1])["error"]
            seen["exit 2"] += 1

    run()
    _report("studio validate", seen, n, record_property)
    assert seen["exit 2"] > 0 and seen["exit 0"] > 0, dict(seen)


# --- nothing already in a run directory is damaged ---------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def existing_run(tmp_path) -> Path:
    run = tmp_path / "runs" / "keep"
    (run / "adapter").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "recipe.yaml").write_text("method: lora\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "train_loss": 5.9}\n')
    (run / "adapter" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 8)
    (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    return run


BAD_RECIPES = {
    "invalid-yaml": "model: [unclosed\n",
    "unknown-key": "lora:\n  ranq: 8\n",
    "nan-lr": "train:\n  learning_rate: .nan\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("name", list(BAD_RECIPES))
def test_failing_train_leaves_an_existing_run_byte_identical(name, existing_run, tmp_path, capsys, tiny_data):
    before = _snapshot(existing_run)
    raw = helpers.recipe_dict(tmp_path / "no-model", tiny_data, existing_run)
    text = yaml.safe_dump(raw) + BAD_RECIPES[name] if name != "binary" else BAD_RECIPES[name]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert main(["train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert _snapshot(existing_run) == before


@pytest.mark.parametrize("problem", ["bad-data", "missing-model"])
def test_valid_recipe_with_bad_inputs_leaves_an_existing_run_byte_identical(problem, existing_run, tmp_path, capsys, tiny_llama_dir, tiny_data):
    before = _snapshot(existing_run)
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a"}\n{oops\n')
    raw = helpers.recipe_dict(tiny_llama_dir if problem == "bad-data" else tmp_path / "no-model", data if problem == "bad-data" else tiny_data, existing_run)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    # Bad inputs are reported before the existing run is even looked at.
    expected = "line is not valid JSON" if problem == "bad-data" else "not found"
    assert err.startswith("error:") and expected in err and "Traceback" not in err
    assert _snapshot(existing_run) == before


def test_overwrite_with_bad_data_keeps_the_old_run(existing_run, tmp_path, capsys, tiny_llama_dir):
    before = _snapshot(existing_run)
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a"}\n{oops\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(helpers.recipe_dict(tiny_llama_dir, data, existing_run)))
    assert main(["train", str(recipe), "--no-progress", "--overwrite"]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert _snapshot(existing_run) == before
