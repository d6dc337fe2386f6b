"""Adapter Studio: LoRA/QLoRA fine-tuning with quantized kernels."""
