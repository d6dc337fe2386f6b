"""Vision-language rows as the model sees them: rendered with the processor's chat template, loss-masked, batched.

The mask follows the text renderer's rule (studio.data.render): the characters of assistant turn i lie between the
rendering of messages[:i] with a generation prompt and that of messages[:i+1], and every assistant turn ends in
the end-of-sequence token (inserted into the text when the template does not write it). A processor expands each
image placeholder into many tokens, so characters cannot map to tokens through offsets; instead the processor
encodes each span's boundary prefix (with the images that prefix holds) and the prefix's length in tokens is the
boundary. The template must therefore render conversations incrementally, as for text. Image tokens never carry
the loss, whatever data.train_on says.

The batch's pixels are made when the batch is (VisionCollator), from the image files: rows keep their text, files
and token ids, not tensors of pixels.
"""

from __future__ import annotations

from studio.data.formats import Example
from studio.data.images import load_image, message_images
from studio.data.render import IGNORE, Encoded, Renderer
from studio.errors import StudioError


def is_processor(obj) -> bool:
    """Whether a model's text side is a multimodal processor (it has an image processor), not a plain tokenizer."""
    return getattr(obj, "image_processor", None) is not None and getattr(obj, "tokenizer", None) is not None


def image_token_ids(processor) -> set[int]:
    """Ids of the tokens an image expands into that stand for its features (never trained, never truncated away)."""
    tokens = {getattr(processor, "image_token", None), getattr(processor.tokenizer, "image_token", None)}
    vocab = processor.tokenizer.get_vocab()
    return {vocab[t] for t in tokens if t in vocab}


class VisionRenderer(Renderer):
    """Encodes chat examples with images for one processor, template, loss policy and image size bound."""

    def __init__(self, processor, max_length: int, train_on: str = "assistant", max_pixels: int = 1_048_576):
        super().__init__(processor.tokenizer, max_length, train_on)
        self.processor = processor
        self.max_pixels = max_pixels
        self.placeholder = getattr(processor, "image_token", None)
        self.image_ids = image_token_ids(processor)
        if not self.placeholder or not self.image_ids:
            raise StudioError(f"the processor {type(processor).__name__} names no image token", where="model.name",
                              fix="use a vision-language model whose processor defines image_token (Gemma 3, SmolVLM/Idefics3, LLaVA, ...)")

    def encode(self, example: Example) -> Encoded:
        """Token ids (images expanded), labels, and the text and image files the batch is made from."""
        if example.text is not None:
            return super().encode(example)
        messages = [{**m, "content": _as_parts(m["content"])} for m in example.messages]
        if messages[0]["role"] == "assistant":
            raise StudioError("a conversation with images cannot open with the assistant's turn", where=example.where, fix="start it with the user's (or system) turn")
        full = self._apply(messages)
        images = message_images(messages)
        if full.count(self.placeholder) != len(images):
            raise StudioError(f"the chat template rendered {full.count(self.placeholder)} image placeholder(s) for {len(images)} image(s)", where=example.where,
                              fix="use the model's own chat template (data.chat_template unset), which places one placeholder per image part")
        spans = [] if self.train_on == "all" else self._assistant_spans(messages, full, example.where)
        text, spans = self._with_eos(full, spans)
        pixels = [load_image(path, example.where, self.max_pixels) for path in images]  # decoded once for every prefix
        ids = self._ids(text, pixels, example.where)
        labels = list(ids) if self.train_on == "all" else [IGNORE] * len(ids)
        for start, end in spans:
            first, last = (self._boundary(ids, text[:at], pixels, example.where) for at in (start, end))
            labels[first:last] = ids[first:last]
        labels = [IGNORE if tid in self.image_ids else label for tid, label in zip(ids, labels)]
        truncated = len(ids) > self.max_length
        if truncated and sum(t in self.image_ids for t in ids[: self.max_length]) < sum(t in self.image_ids for t in ids):
            raise StudioError(f"the row's image tokens do not fit in data.max_length ({self.max_length} of {len(ids)} tokens)", where=example.where,
                              fix="raise data.max_length, or lower data.image_max_pixels so each image becomes fewer tokens")
        return Encoded(ids[: self.max_length], labels[: self.max_length], truncated, example.where, text=text, images=tuple(images))

    def _apply(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        messages = [{**m, "content": _as_parts(m["content"])} for m in messages]
        try:
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # jinja's TemplateError subclasses, or a template's own raise_exception
            raise StudioError(f"the chat template failed to render: {exc}", where="data.chat_template", fix="check the template, or unset data.chat_template to use the model's own") from None

    def _with_eos(self, full: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
        """The text with the EOS token written after every assistant turn that does not end in it, and the spans moved
        to match (each now ending after its EOS): the model learns to stop, as in text runs."""
        eos = self.tok.eos_token
        text, moved, shift, cursor = [], [], 0, 0
        for start, end in spans:
            text.append(full[cursor:end])
            cursor = end
            add = "" if full[:end].endswith(eos) else eos
            text.append(add)
            moved.append((start + shift, end + shift + len(add)))
            shift += len(add)
        text.append(full[cursor:])
        return "".join(text), moved

    def _ids(self, text: str, pixels: list, where: str) -> list[int]:
        """The processor's token ids of `text`, given the row's first images (as many as the text has placeholders)."""
        images = pixels[: text.count(self.placeholder)]
        try:
            out = self.processor(text=[text], images=[images] if images else None, add_special_tokens=False)
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:  # processors raise these for an image they cannot fit
            raise StudioError(f"the model's processor cannot encode this row: {str(exc).splitlines()[0][:200]}", where=where,
                              fix="check the row's images (a very thin or very small image may be refused) and data.image_max_pixels") from None
        return list(out["input_ids"][0])

    def _boundary(self, ids: list[int], prefix: str, pixels: list, where: str) -> int:
        """How many of the row's tokens the text `prefix` accounts for (where the row's ids and the prefix's agree)."""
        head = self._ids(prefix, pixels, where)
        agree = 0
        for a, b in zip(ids, head):
            if a != b:
                break
            agree += 1
        return agree


def _as_parts(content) -> list[dict]:
    # List-only templates (SmolVLM's) read content[0]['type']; a string turn becomes one text part.
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


class VisionCollator:
    """Pads a batch of vision-language rows and adds what the model needs of their images (pixel values, and any
    per-token extras the processor makes, such as Gemma 3's token_type_ids), from the files."""

    def __init__(self, processor, max_pixels: int):
        self.processor = processor
        self.max_pixels = max_pixels
        self.pad = processor.tokenizer.pad_token_id

    def encoded_batch(self, rows: list[Encoded]) -> dict:
        """The batch of encoded rows (as the trainer's dataset holds them), labels included."""
        return self([{"input_ids": r.input_ids, "labels": r.labels, "text": r.text, "images": list(r.images), "where": r.where} for r in rows])

    def __call__(self, features: list[dict]) -> dict:
        import torch

        images = [[load_image(path, row["where"], self.max_pixels) for path in row["images"]] for row in features]
        texts = [row["text"] for row in features]
        kwargs = {"images": images} if any(images) else {}
        out = self.processor(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False, **kwargs)
        lengths = [len(row["input_ids"]) for row in features]
        width = max(lengths)
        full = out["input_ids"]
        for index, row in enumerate(features):
            if full[index, : lengths[index]].tolist() != list(row["input_ids"]):
                raise StudioError("the processor encodes this row differently from when the data was built", where=row["where"],
                                  fix="the model folder's processor changed during the run; start the run again")
        batch = {}
        for key, value in out.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == tuple(full.shape):
                value = value[:, :width].clone()
                for index, length in enumerate(lengths):
                    value[index, length:] = 0  # positions cut by data.max_length are padding now
            batch[key] = value
        batch["input_ids"] = torch.tensor([list(r["input_ids"]) + [self.pad] * (width - n) for r, n in zip(features, lengths)])
        batch["attention_mask"] = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        batch["labels"] = torch.tensor([list(r["labels"]) + [IGNORE] * (width - n) for r, n in zip(features, lengths)])
        return batch


def on_device(batch: dict, device, dtype) -> dict:
    """The batch on `device`, pixels in the model's precision (as training's load fed them); ids and masks stay integers."""
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


def prompt_images(messages, max_pixels: int, where: str) -> list:
    """The decoded images of the messages, in placeholder order (what a prompt's processor call needs)."""
    return [load_image(path, where, max_pixels) for path in message_images(messages)]
