"""Keep a frozen input-embedding table in CPU memory (`train.offload_embeddings: true`).

Under LoRA the input embedding is frozen, and a step reads only the rows of the tokens in its batch, so
the table need not occupy the GPU: Llama-3's 128k x 4096 bf16 table is 1 GiB, about a sixth of an 8B
QLoRA run. The lookup runs on the CPU and only the looked-up rows (batch x sequence x hidden) travel
to the GPU. The table is held outside the module tree, so `model.to(device)` (the trainer's, FSDP's)
never moves it back. A table tied to the output head stays where it is: the head needs it on the GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from studio.errors import StudioError


class CPUEmbedding(nn.Module):
    """Runs a frozen embedding module on the CPU and returns its rows on the device of the input ids."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        embedding.requires_grad_(False)
        embedding.to("cpu")
        # A plain attribute, not a child module: module moves, casts and state_dict pass it by.
        object.__setattr__(self, "cpu_module", embedding)
        self.num_embeddings, self.embedding_dim = embedding.weight.shape
        self.padding_idx = getattr(embedding, "padding_idx", None)

    @property
    def weight(self) -> torch.Tensor:
        """The table itself (on the CPU), for code that reads the embedding's shape or dtype."""
        return self.cpu_module.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed on the CPU (the wrapped module's own forward, so scaled embeddings stay scaled), then move."""
        rows = self.cpu_module(input_ids.to("cpu"))
        return rows.to(input_ids.device)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, table on cpu"


def offload_input_embeddings(model: nn.Module) -> int:
    """Swap the model's input embedding for a CPUEmbedding; returns the bytes taken off the device.

    Raises StudioError when the table is tied to the output head (the head must keep it on the GPU).
    """
    embedding = model.get_input_embeddings()
    if isinstance(embedding, CPUEmbedding):
        return 0
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is embedding.weight:
        raise StudioError(
            "train.offload_embeddings: this model ties its input embedding to its output head, which needs the table on the GPU",
            where="train.offload_embeddings",
            fix="set train.offload_embeddings: false (tied tables are shared, so keeping one copy on the GPU is already the cheap case)",
        )
    size = embedding.weight.numel() * embedding.weight.element_size()
    model.set_input_embeddings(CPUEmbedding(embedding))
    return size
