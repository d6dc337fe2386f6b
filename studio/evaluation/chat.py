"""A conversation with a run's adapter (or its base model), keeping the history in the chat template; a
vision-language run's turns may carry images."""

from __future__ import annotations

from pathlib import Path

from studio.errors import StudioError


class ChatSession:
    """Loads the base (and the adapter) once, then answers turns with greedy decoding."""

    def __init__(self, run_dir: str | Path, use_adapter: bool = True, max_new_tokens: int | None = None):
        from studio.evaluation.probes import HeldoutReader
        from studio.modeling.adapter import load_with_adapter
        from studio.training.rundir import ADAPTER, open_run

        run_dir, recipe = open_run(run_dir)
        loaded = load_with_adapter(recipe, run_dir / ADAPTER, with_adapter=use_adapter, vision=True)
        self.model, self.tokenizer, self.processor = loaded.model, loaded.tokenizer, loaded.processor
        self.reader = HeldoutReader(recipe, self.tokenizer, self.processor)
        self.max_new_tokens = max_new_tokens or recipe.eval.max_new_tokens
        self.system = recipe.data.system_prompt
        self.reset()

    @property
    def sees_images(self) -> bool:
        """Whether the model reads images (a vision-language run)."""
        return self.processor is not None

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history: list[dict] = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, text: str, images: list[str | Path] = ()) -> str:
        """Add a user turn (with the image files `images`, shown before the text), generate the answer, remember
        both, return the answer. Images are checked as training data is (studio.data.images.load_image)."""
        from studio.data.vision import prompt_images
        from studio.evaluation.generate import generate

        if images and not self.sees_images:
            raise StudioError("this run's model reads text only", where="image", fix="drop the image, or chat with a vision-language run")
        content = [{"type": "image", "image": str(Path(p).resolve())} for p in images]
        turn = {"role": "user", "content": [*content, {"type": "text", "text": text}] if content else text}
        pictures = [prompt_images([*self.history, turn], self.reader.max_pixels, "chat")] if self.sees_images else None
        self.history.append(turn)
        try:
            prompt = self.reader.renderer.prompt_text(self.history)
            answer = generate(self.model, self.tokenizer, [prompt], self.max_new_tokens, 1, self.processor, pictures)[0]
        except BaseException:
            self.history.pop()  # a failed turn leaves the conversation as it was
            raise
        self.history.append({"role": "assistant", "content": answer})
        return answer
