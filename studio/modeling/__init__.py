"""Models: where a base model comes from, how it is loaded (16-bit or 4-bit) and how adapters attach.

    source.py             model.name -> a local folder (bundled model, GGUF converted once, local folder, hub)
    loading.py            device and precision, tokenizer, base model, the QLoRA backend, LoRA attached
    adapter.py            a trained run's base + adapter for inference (evaluation, chat, merge)
    quant.py              the studio's NF4 backend: QuantLinear layers and peft's LoRA on them
    embedding_offload.py  the frozen input-embedding table kept in CPU memory
    fused_loss.py         the training loss through the fused linear + cross-entropy kernel
    quiet.py              library chatter (notices, load bars) kept out of the studio's output
"""
