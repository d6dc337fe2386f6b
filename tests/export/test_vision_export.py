"""Export of vision-language runs to llama.cpp / Ollama, on tiny trained Gemma 3 and Idefics3 (SmolVLM) runs.

The text GGUF (the language model, round-tripped and gated like a text export) plus the vision projector GGUF
(mmproj) whose tensors are compared, name by name and value by value, with the merged model's through a name table
written here from llama.cpp's names (not the exporter's own mapping); its clip.* metadata; the Ollama Modelfile's
second FROM; unsupported or corrupted architectures refused before anything is merged or written; and nothing
left behind when a check fails.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from tiny_vlms import VLM_ARCHITECTURES
from tiny_vlms import vision_recipe as shared_recipe

from studio.errors import StudioError
from studio.training.train import train

PLACEHOLDER = {"gemma3": "<start_of_image>", "idefics3": "<image>"}
PROJECTOR = {"gemma3": "gemma3", "idefics3": "idefics3"}
TEXT_ARCH = {"gemma3": "gemma3", "idefics3": "llama"}


def chatml_with_images(placeholder: str) -> str:
    """ChatML for text turns (so Ollama's TEMPLATE is recognised), the processor's placeholder for image parts."""
    return ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
            "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}" + placeholder +
            "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def vision_recipe(model_dir, out_dir, **data):
    return shared_recipe(model_dir, out_dir, train={"max_steps": 2, "save_steps": 2}, data=data)


@pytest.fixture(scope="module")
def runs(vlms, tmp_path_factory) -> dict:
    """A 2-step run per architecture, trained with the model's own chat template."""
    return {arch: train(vision_recipe(d, tmp_path_factory.mktemp(f"run-{arch}")), progress=False).run_dir for arch, d in vlms.items()}


@pytest.fixture(scope="module")
def exports(runs) -> dict:
    """`studio export RUN --format gguf` (f16) of each run."""
    from studio.export.exporter import export

    return {arch: export(run_dir, "gguf") for arch, run_dir in runs.items()}


def fields(path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_gguf_export_writes_the_text_model_and_the_projector(exports, runs, arch):
    result = exports[arch]
    assert result.passed and result.tokenizer_match and result.top1_agreement >= 0.98
    assert result.mmproj == result.path.with_name(f"mmproj-{result.path.name}")
    assert result.paths == [result.path, result.mmproj] and all(p.exists() for p in result.paths)
    assert not list(result.path.parent.glob(".*tmp*"))  # no temporary file left beside them
    text_meta, text_tensors = fields(result.path)
    assert text_meta["general.architecture"] == TEXT_ARCH[arch]
    assert "token_embd.weight" in text_tensors and not any(n.startswith(("v.", "mm.")) for n in text_tensors)
    assert fields(result.mmproj)[0]["general.architecture"] == "clip"
    record = json.loads((runs[arch] / "export.json").read_text())["gguf-f16"]
    assert record["mmproj"] == str(result.mmproj) and record["projector"]["projector_type"] == PROJECTOR[arch]
    assert record["consistency"]["passed"] and any("vision-language run" in n for n in record["notes"])


# llama.cpp's names for the SigLIP tower and each projector, written out here so the test does not trust the
# exporter's mapping: (regex on transformers' in-memory name, GGUF name).
_TOWER = [
    (r"embeddings\.patch_embedding\.(weight|bias)", r"v.patch_embd.\1"),
    (r"embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"v.blk.\1.attn_\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"v.blk.\1.attn_out.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"v.blk.\1.ln\2.\3"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"v.blk.\1.ffn_up.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"v.blk.\1.ffn_down.\2"),
    (r"post_layernorm\.(weight|bias)", r"v.post_ln.\1"),
]
_NAMES = {
    "gemma3": [(r"model\.vision_tower\.(?:vision_model\.)?" + a, b) for a, b in _TOWER] + [
        (r"model\.multi_modal_projector\.mm_input_projection_weight", "mm.input_projection.weight"),
        (r"model\.multi_modal_projector\.mm_soft_emb_norm\.weight", "mm.soft_emb_norm.weight"),
    ],
    "idefics3": [(r"model\.vision_model\." + a, b) for a, b in _TOWER] + [(r"model\.connector\.modality_projection\.proj\.weight", "mm.model.fc.weight")],
}


def expected_projector(merged_dir, arch) -> dict[str, np.ndarray]:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32)
    out = {}
    for name, value in model.state_dict().items():
        for pattern, gguf_name in _NAMES[arch]:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, gguf_name, name)] = value.numpy()
    if arch == "gemma3":
        out["mm.soft_emb_norm.weight"] = out["mm.soft_emb_norm.weight"] + 1.0  # Gemma's x * (1 + w) as clip.cpp's x * w
    return out


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_the_projector_holds_the_merged_vision_tower(exports, runs, arch):
    from studio.training.rundir import merged_dir

    expected = expected_projector(merged_dir(runs[arch]), arch)
    _, tensors = fields(exports[arch].mmproj)
    assert len(expected) == 16 * 2 + 3 + 2 + (2 if arch == "gemma3" else 1)  # two encoder layers, embeddings, post norm, projector
    assert set(tensors) == set(expected)
    for name, want in expected.items():
        got = np.asarray(tensors[name].data)
        assert got.shape == want.shape, name  # a transposed matrix fails here (they are not square) or on values
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=1e-4, err_msg=name)
    assert tensors["v.patch_embd.weight"].data.shape == (32, 3, 8, 8)  # the conv kernel keeps its 4-D shape
    assert tensors["v.patch_embd.weight"].data.dtype == np.float32 and tensors["v.blk.0.ln1.weight"].data.dtype == np.float32
    assert tensors["v.blk.0.attn_q.weight"].data.dtype == np.float16  # f16 export: matrices in f16


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_the_projector_metadata_is_what_clip_cpp_reads(exports, arch):
    meta, _ = fields(exports[arch].mmproj)
    want = {
        "general.architecture": "clip", "general.type": "mmproj", "clip.has_vision_encoder": True, "clip.projector_type": PROJECTOR[arch],
        "clip.vision.image_size": 32, "clip.vision.patch_size": 8, "clip.vision.embedding_length": 32, "clip.vision.feed_forward_length": 64,
        "clip.vision.block_count": 2, "clip.vision.attention.head_count": 2, "clip.vision.projection_dim": 64,
        "clip.vision.image_mean": [0.5, 0.5, 0.5], "clip.vision.image_std": [0.5, 0.5, 0.5], "clip.use_gelu": True,
        # gemma3: 4x4 patches pooled to 2x2 image tokens; idefics3: the connector's pixel-shuffle factor
        "clip.vision.projector.scale_factor": 2,
    }
    if arch == "idefics3":
        want["clip.vision.preproc_image_size"] = 32
    for key, value in want.items():
        assert meta.get(key) == value, key
    assert meta["clip.vision.attention.layer_norm_epsilon"] == pytest.approx(1e-6)


def test_the_read_back_catches_a_transposed_or_missing_tensor(exports, runs, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from studio.export.mmproj import check_mmproj, vision_plan, write_mmproj
    from studio.training.rundir import merged_dir

    folder = merged_dir(runs["idefics3"])
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    path = tmp_path / "mmproj.gguf"
    tensors, meta = write_mmproj(model, AutoProcessor.from_pretrained(folder), path, "f32", vision_plan(folder), "t")
    assert check_mmproj(path, tensors, meta, "f32")["max_abs_diff"] == 0.0
    transposed = {**tensors, "mm.model.fc.weight": np.ascontiguousarray(tensors["mm.model.fc.weight"].T)}
    with pytest.raises(StudioError, match="mm.model.fc.weight has shape"):
        check_mmproj(path, transposed, meta, "f32")
    nudged = {**tensors, "v.blk.1.attn_q.weight": tensors["v.blk.1.attn_q.weight"].T.copy()}  # square: caught on values
    with pytest.raises(StudioError, match="v.blk.1.attn_q.weight .* differs"):
        check_mmproj(path, nudged, meta, "f32")
    with pytest.raises(StudioError, match="v.post_ln.bias is not the merged model's"):
        check_mmproj(path, {k: v for k, v in tensors.items() if k != "v.post_ln.bias"}, meta, "f32")
    with pytest.raises(StudioError, match="clip.projector_type"):
        check_mmproj(path, tensors, {**meta, "clip.projector_type": "gemma3"}, "f32")


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_ollama_export_names_the_projector_in_a_second_from(vlms, arch, tmp_path):
    from studio.export.exporter import export
    from studio.export.ollama import parse_modelfile

    run_dir = train(vision_recipe(vlms[arch], tmp_path / "run", chat_template=chatml_with_images(PLACEHOLDER[arch])), progress=False).run_dir
    result = export(run_dir, "ollama")
    folder = run_dir / "ollama"
    assert result.passed and result.consistency["passed"]
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "mmproj.gguf", "model.gguf"]
    text = result.modelfile.read_text()
    assert text.index("FROM ./model.gguf") < text.index("FROM ./mmproj.gguf")
    modelfile = parse_modelfile(text)
    assert (modelfile.source, modelfile.projector) == ("./model.gguf", "./mmproj.gguf")
    assert fields(folder / "mmproj.gguf")[0]["general.type"] == "mmproj"  # how `ollama create` tells a projector from a model
    assert any(note.startswith("Ollama:") for note in result.notes)


def test_smolvlm_writes_the_idefics3_projector(vlms, tmp_path):
    # SmolVLM (model_type smolvlm) is Idefics3's layout under another name; llama.cpp converts both as "idefics3".
    from transformers import AutoModelForImageTextToText, AutoProcessor, SmolVLMConfig

    from studio.export.mmproj import check_mmproj, vision_plan, write_mmproj

    config = SmolVLMConfig(text_config={"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                        "num_attention_heads": 4, "num_key_value_heads": 2},
                           vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                          "image_size": 32, "patch_size": 8}, scale_factor=2)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path / "smol")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "smol", dtype=torch.float32)
    plan = vision_plan(tmp_path / "smol")
    assert (plan.model_type, plan.projector, plan.text_type) == ("smolvlm", "idefics3", "llama")
    # the tiny Idefics3's image processor stands in: only its mean, std and size reach the file
    tensors, meta = write_mmproj(model, AutoProcessor.from_pretrained(vlms["idefics3"]), tmp_path / "mmproj.gguf", "f16", plan, "smol")
    assert check_mmproj(tmp_path / "mmproj.gguf", tensors, meta, "f16")["tensors"] == 38 and "mm.model.fc.weight" in tensors


def _copy_run(run_dir, dest, base=None):
    """The run directory without its merge and exports (as before `studio merge`), its recipe pointing at `base`."""
    import yaml

    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("merged", "export", "ollama", "merge.json", "export.json"))
    if base is not None:
        raw = yaml.safe_load((dest / "recipe.yaml").read_text())
        raw["model"]["name"] = str(base)
        (dest / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return dest


@pytest.mark.parametrize("model_type", ["mllama", "qwen2_vl", "llava"])
def test_an_unsupported_vision_architecture_is_refused_before_merging(vlms, runs, tmp_path, model_type):
    from studio.export.exporter import export

    base = shutil.copytree(vlms["gemma3"], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    run_dir = _copy_run(runs["gemma3"], tmp_path / "run", base)
    with pytest.raises(StudioError, match=f"'{model_type}' vision-language architecture is not supported") as info:
        export(run_dir, "gguf")
    assert "gemma3" in info.value.fix and "idefics3" in info.value.fix
    assert not any((run_dir / name).exists() for name in ("merged", "export", "export.json", "merge.json"))


def test_a_corrupted_merged_folder_is_refused_before_any_file_is_written(exports, runs, tmp_path):
    from studio.export.exporter import export

    run_dir = _copy_run(runs["idefics3"], tmp_path / "run")
    shutil.copytree(runs["idefics3"] / "merged", run_dir / "merged")
    config = json.loads((run_dir / "merged" / "config.json").read_text())
    (run_dir / "merged" / "config.json").write_text(json.dumps({**config, "model_type": "llava_next"}))
    with pytest.raises(StudioError, match="'llava_next'"):
        export(run_dir, "ollama")
    assert not any((run_dir / name).exists() for name in ("export", "ollama", "export.json"))


def test_a_projector_that_does_not_read_back_leaves_nothing(runs, tmp_path, monkeypatch):
    from studio.export import exporter

    real = exporter.write_mmproj

    def drifted(*args, **kwargs):  # the file on disk no longer holds what the merged model holds
        tensors, meta = real(*args, **kwargs)
        return {**tensors, "v.post_ln.weight": tensors["v.post_ln.weight"] + 0.5}, meta

    monkeypatch.setattr(exporter, "write_mmproj", drifted)
    with pytest.raises(StudioError, match="v.post_ln.weight .* differs"):
        exporter.export(runs["gemma3"], "gguf", out=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_text_round_trip_removes_the_projector_too(runs, tmp_path, monkeypatch):
    from studio.export import exporter

    real = exporter.compare_with_gguf
    monkeypatch.setattr(exporter, "compare_with_gguf", lambda *a, **k: {**real(*a, **k), "top1": 0.1})
    with pytest.raises(StudioError, match="export diverges"):
        exporter.export(runs["idefics3"], "gguf", out=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_the_cli_names_the_projector(runs, tmp_path, capsys):
    from studio.cli import main

    assert main(["export", str(runs["idefics3"]), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    out = capsys.readouterr().out
    assert f"vision projector: {tmp_path / 'mmproj-m.gguf'}" in out and "idefics3, read back:" in out
