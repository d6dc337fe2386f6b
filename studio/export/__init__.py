"""Export: the adapter merged into the base, and the merged model as GGUF and Ollama files, each checked.

    merge.py       merge into the base's own weights, reload, compare logits with base + adapter
    gguf.py        write a merged Hugging Face model as one GGUF file (a vision model's language model)
    mmproj.py      a vision run's projector GGUF (tower + projector, llama.cpp's clip names) and its read-back check
    ollama.py      the Modelfile whose template is the one training used (recognised, never guessed)
    round_trip.py  load a written GGUF with an independent reader and compare next-token predictions
    consistency.py the serving-consistency gate of merge and export: prompts, stop tokens, thinking, stopping
    serving.py     how training, the merged model, the GGUF and the Modelfile each render, encode and stop
    go_template.py render an Ollama TEMPLATE (Go text/template) through jinja2
    stopping.py    greedy answers of the GGUF stop where the merged model's stop
    exporter.py    export(): merge if needed, write, round-trip, keep only a file that passes
    formats.py     formats, precisions and thresholds (light: the CLI and UI read it)
"""
