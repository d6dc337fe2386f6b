"""GGUF and Ollama export: the file computes what the merged model computes, or it is not shipped.

The round trip loads each export with an independent reader (transformers' `gguf_file=` loader) and
compares next-token distributions with the merged model. Adapters are initialised non-zero (as in
test_merge.py), so the merged weights differ from the base and the check compares something real.
"""

import argparse
import json
import re

import helpers
import numpy as np
import pytest
import torch

from studio.cli.commands import cmd_export
from studio.cli.parser import add_export_parser
from studio.errors import StudioError
from studio.export import gguf as export_gguf
from studio.export.exporter import export
from studio.export.formats import THRESHOLDS
from studio.export.gguf import llama_rotary_reorder
from studio.export.ollama import CHATML, LLAMA3, modelfile_text, recognise_template

# llama, qwen2 and mistral load back with transformers' stock GGUF reader; gemma3 loads too, with the
# attention scale and layer pattern the reader skips filled from the file (see studio/export/round_trip.py).
ARCHS = ["llama", "qwen2", "mistral", "gemma3"]


def sharpened_model_dir(path, arch, logit_std=4.0, qk_scale=4.0):
    """A tiny model whose predictions are as confident as a trained model's, saved to path.

    Random tiny models predict a near-uniform next token (entropy ~ln(vocab)): there, KL is ~0 and
    top-1 flips on near-ties whatever the file holds, so the round trip could not tell a good export
    from a broken one. Scaling the output layer to logits of std ~4 (entropy ~1-2 nats, like a trained
    model) and sharpening attention (q, k x4, so that positions matter) gives the check real signal.
    """
    from transformers import AutoModelForCausalLM

    helpers.make_model_dir(path, arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    probe = torch.arange(1, 41).unsqueeze(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(qk_scale)
        std = float(model(input_ids=probe).logits.std())
        model.get_output_embeddings().weight.mul_(logit_std / std)  # tied models: the norm after the embedding undoes the input side
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def runs(tiny_data, tiny_test_data, tmp_path_factory):
    """arch -> a run directory on a sharpened tiny model (merged on first export), built once per module."""
    root = tmp_path_factory.mktemp("export-runs")
    cache = {}

    def get(arch):
        if arch not in cache:
            base = sharpened_model_dir(root / f"base-{arch}", arch)
            cache[arch] = helpers.make_run_dir(base, tiny_data, root / arch, data={"test_path": str(tiny_test_data)})
        return cache[arch]

    return get


def read_fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return reader, {name: field.contents() for name, field in reader.fields.items() if name not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")}


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_export_round_trips(arch, runs, tmp_path):
    run = runs(arch)
    result = export(run, quant="f16", out=tmp_path)
    assert result.passed and result.tokenizer_match
    assert result.top1_agreement == 1.0
    assert 0.0 <= result.mean_kl < 1e-4
    assert result.prompts == 4 and result.positions > 40
    assert result.path == tmp_path / f"{run.name}-f16.gguf" and result.path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [result.path.name]  # no temp file left behind
    recorded = json.loads((run / "export.json").read_text())["gguf-f16"]
    assert recorded["passed"] is True and recorded["top1_agreement"] == 1.0 and recorded["path"] == str(result.path)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_q8_0_export_passes_its_looser_threshold(arch, runs, tmp_path):
    from gguf import GGMLQuantizationType

    result = export(runs(arch), quant="q8_0", out=tmp_path / "m.gguf")
    min_top1, max_kl = THRESHOLDS["q8_0"]
    assert result.passed and result.top1_agreement >= min_top1 and result.mean_kl <= max_kl
    assert result.mean_kl > 0.0  # it is quantized: not bit-identical
    reader, _ = read_fields(result.path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32  # 1-D tensors stay f32


def test_skipping_the_rotary_reorder_is_caught_and_nothing_is_shipped(runs, tmp_path, monkeypatch):
    run = runs("llama")
    target = tmp_path / "broken.gguf"
    monkeypatch.setattr(export_gguf, "llama_rotary_reorder", lambda weight, n_heads: weight)  # the layout bug to catch
    with pytest.raises(StudioError, match="export diverges from the merged model") as err:
        export(run, quant="f32", out=target)
    assert "mean KL" in err.value.what
    assert not target.exists() and list(tmp_path.iterdir()) == []
    recorded = json.loads((run / "export.json").read_text())["gguf-f32"]
    assert recorded["passed"] is False and recorded["path"] is None and recorded["mean_kl"] > THRESHOLDS["q8_0"][1]
    # Even the looser q8_0 threshold catches it.
    with pytest.raises(StudioError, match="export diverges"):
        export(run, quant="q8_0", out=target)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupted_tensor_is_caught(runs, tmp_path, monkeypatch):
    original = export_gguf._add_tensor

    def corrupt(writer, name, value, quant):
        if name == "token_embd.weight":
            value = np.roll(value, 1, axis=0)  # an off-by-one in the vocabulary: a plausible bug
        original(writer, name, value, quant)

    monkeypatch.setattr(export_gguf, "_add_tensor", corrupt)
    with pytest.raises(StudioError, match="export diverges"):
        export(runs("qwen2"), quant="f16", out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rotary_reorder_turns_half_split_rotation_into_adjacent_pairs():
    """HF rotate_half rope on W x equals llama.cpp's adjacent-pair rope on (reordered W) x, reordered."""
    torch.manual_seed(0)
    heads, head_dim, hidden, pos = 3, 8, 12, 5
    weight = torch.randn(heads * head_dim, hidden)
    x = torch.randn(hidden)
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    cos, sin = torch.cos(pos * inv), torch.sin(pos * inv)

    q = (weight @ x).view(heads, head_dim)
    x1, x2 = q[:, : head_dim // 2], q[:, head_dim // 2 :]
    hf = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)  # transformers' rotate_half

    reordered = torch.from_numpy(llama_rotary_reorder(weight.numpy(), heads))
    r = (reordered @ x).view(heads, head_dim // 2, 2)
    even, odd = r[..., 0], r[..., 1]
    gg = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).reshape(heads, head_dim)  # adjacent pairs
    expected = torch.from_numpy(llama_rotary_reorder(hf.reshape(-1, 1).numpy(), heads)).view(heads, head_dim)
    torch.testing.assert_close(gg, expected)
    # The q.k score is a sum over the same pairs either way.
    torch.testing.assert_close((gg * gg).sum(), (hf * hf).sum())


def test_metadata_has_architecture_tokenizer_chat_template_and_eos(runs, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    run = runs("llama")
    path = export(run, quant="f16", out=tmp_path).path
    reader, fields = read_fields(path)
    tok = AutoTokenizer.from_pretrained(run / "merged")
    config = AutoConfig.from_pretrained(run / "merged")
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == 1
    assert fields["llama.block_count"] == config.num_hidden_layers
    assert fields["llama.embedding_length"] == config.hidden_size
    assert fields["llama.feed_forward_length"] == config.intermediate_size
    assert fields["llama.attention.head_count"] == config.num_attention_heads
    assert fields["llama.attention.head_count_kv"] == config.num_key_value_heads
    assert fields["llama.context_length"] == config.max_position_embeddings
    assert fields["llama.vocab_size"] == config.vocab_size
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.chat_template"] == helpers.CHATML
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids(helpers.IM_END)
    assert fields["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False and "tokenizer.ggml.bos_token_id" not in fields
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == config.vocab_size and tokens[tok.eos_token_id] == helpers.IM_END
    assert types[tok.eos_token_id] == 3  # CONTROL: llama.cpp keeps it whole and treats it as end of generation
    assert "output.weight" in {t.name for t in reader.tensors}  # untied llama keeps its own output layer


def test_tokenizer_read_back_from_the_gguf_encodes_like_the_merged_one(runs, tmp_path):
    from transformers import AutoTokenizer

    run = runs("qwen2")
    path = export(run, quant="f16", out=tmp_path).path
    merged = AutoTokenizer.from_pretrained(run / "merged")
    back = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    conversation = [{"role": "user", "content": "what is the sum of 7 plus 12? {\"qty\": 3}"}, {"role": "assistant", "content": "19"}]
    text = merged.apply_chat_template(conversation, tokenize=False)
    assert back(text)["input_ids"] == merged(text)["input_ids"]
    assert back.eos_token == helpers.IM_END and back.chat_template == helpers.CHATML


# --- Ollama ------------------------------------------------------------------------------------

def go_render(template: str, messages: list[dict], system: str = "", prompt: str = "") -> str:
    """A tiny renderer for the Go-template subset Modelfiles use here.

    Actions: {{ .Field }}, {{ range .Messages }}...{{ end }}, {{ if .Field }}...{{ else }}...{{ end }},
    with `{{-` / `-}}` trimming the whitespace next to them, as text/template does.
    """
    parts = re.split(r"({{-?\s*.*?\s*-?}})", template)
    tokens = []
    for i, part in enumerate(parts):
        if i % 2:
            tokens.append(("action", part))
        else:
            tokens.append(("text", part))
    for i, (kind, value) in enumerate(tokens):
        if kind != "action":
            continue
        if value.startswith("{{-") and i > 0:
            tokens[i - 1] = ("text", tokens[i - 1][1].rstrip())
        if value.endswith("-}}") and i + 1 < len(tokens):
            tokens[i + 1] = ("text", tokens[i + 1][1].lstrip())
    nodes = [(k, v if k == "text" else v.strip("{}").strip("-").strip()) for k, v in tokens]

    def parse(pos):
        body = []
        while pos < len(nodes):
            kind, value = nodes[pos]
            if kind == "text":
                body.append(("text", value))
                pos += 1
            elif value in ("end", "else"):
                return body, pos
            elif value.startswith("range "):
                inner, pos = parse(pos + 1)
                assert nodes[pos][1] == "end"
                body.append(("range", value[6:].strip(), inner))
                pos += 1
            elif value.startswith("if "):
                then, pos = parse(pos + 1)
                other = []
                if nodes[pos][1] == "else":
                    other, pos = parse(pos + 1)
                assert nodes[pos][1] == "end"
                body.append(("if", value[3:].strip(), then, other))
                pos += 1
            else:
                assert value.startswith("."), value
                body.append(("field", value[1:]))
                pos += 1
        return body, pos

    def run(body, scope):
        out = []
        for node in body:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "field":
                out.append(str(scope[node[1]]))
            elif node[0] == "range":
                for item in scope[node[1][1:]]:
                    out.append(run(node[2], item))
            elif node[0] == "if":
                out.append(run(node[2] if scope.get(node[1][1:]) else node[3], scope))
        return "".join(out)

    tree, end = parse(0)
    assert end == len(nodes), "unbalanced template"
    go_messages = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    return run(tree, {"Messages": go_messages, "System": system, "Prompt": prompt})


def modelfile_template(text: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)


CONVERSATION = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "add 2 and 3"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "add 4 and 4\nplease"},
]


def test_ollama_export_writes_gguf_and_a_modelfile_matching_the_chat_template(tiny_models, tiny_data, tmp_path):
    from transformers import AutoTokenizer

    run = helpers.make_run_dir(
        tiny_models("llama"), tiny_data, tmp_path / "run", data={"system_prompt": "You are a calculator."}
    )
    result = export(run, fmt="ollama", quant="f16")
    assert result.passed and result.path == run / "ollama" / "model.gguf" and result.path.is_file()
    text = result.modelfile.read_text()
    assert text.startswith("FROM ./model.gguf\n")
    assert 'SYSTEM """You are a calculator."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    template = modelfile_template(text)
    tok = AutoTokenizer.from_pretrained(run / "merged")
    for n in (2, 4):  # a fresh question, and a follow-up after an answer
        messages = CONVERSATION[:n]
        assert go_render(template, messages) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert json.loads((run / "export.json").read_text())["ollama-f16"]["modelfile"] == str(result.modelfile)


def test_a_template_with_its_own_default_system_prompt_becomes_the_modelfile_system(tiny_tokenizer):
    smol = (  # SmolLM2-Instruct's template: ChatML with a default system turn
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tok = helpers.make_tokenizer(smol)
    match = recognise_template(tok)
    assert match.family is CHATML and match.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    text = modelfile_text(tok)
    assert f'SYSTEM """{match.default_system}"""' in text
    # What Ollama sends: the SYSTEM as the first message, then the user's turn.
    messages = [{"role": "system", "content": match.default_system}, {"role": "user", "content": "hi"}]
    assert go_render(modelfile_template(text), messages) == tok.apply_chat_template([messages[1]], tokenize=False, add_generation_prompt=True)
    assert 'SYSTEM """Be brief."""' in modelfile_text(tok, system_prompt="Be brief.")


def test_llama3_template_is_recognised_and_its_go_template_renders_the_same():
    llama3 = (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    )
    tok = helpers.make_tokenizer(llama3)
    assert recognise_template(tok).family is LLAMA3
    text = modelfile_text(tok)
    assert 'PARAMETER stop "<|eot_id|>"' in text
    rendered = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    # The Jinja template writes BOS itself; Ollama gets it from the GGUF's add-BOS flag.
    assert go_render(modelfile_template(text), CONVERSATION) == rendered.removeprefix(tok.bos_token or "")


def test_an_unrecognised_template_is_refused_for_ollama(tiny_models, tiny_data, tmp_path):
    run = helpers.make_run_dir(tiny_models("llama", helpers.PLAIN_TEMPLATE), tiny_data, tmp_path / "run")
    with pytest.raises(StudioError, match="neither ChatML nor Llama 3"):
        export(run, fmt="ollama")
    assert not (run / "ollama").exists()


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_export_prints_the_figures_as_json(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(runs("mistral")), "--quant", "q8_0", "--out", str(tmp_path), "--json"])
    assert cmd_export(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and data["quant"] == "q8_0" and data["format"] == "gguf"
    assert data["top1_agreement"] >= THRESHOLDS["q8_0"][0] and data["path"].endswith("-q8_0.gguf")


def test_unknown_quant_is_a_studio_error(runs):
    with pytest.raises(StudioError, match="unknown GGUF precision"):
        export(runs("llama"), quant="q4_k")
