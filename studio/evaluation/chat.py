"""A conversation with a run's adapter (or its base model), keeping the history in the chat template."""

from __future__ import annotations

from pathlib import Path


class ChatSession:
    """Loads the base (and the adapter) once, then answers turns with greedy decoding."""

    def __init__(self, run_dir: str | Path, use_adapter: bool = True, max_new_tokens: int | None = None):
        from studio.data import Renderer
        from studio.modeling.adapter import load_with_adapter
        from studio.training.rundir import ADAPTER, open_run

        run_dir, recipe = open_run(run_dir)
        loaded = load_with_adapter(recipe, run_dir / ADAPTER, with_adapter=use_adapter)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.renderer = Renderer(self.tokenizer, recipe.data.max_length)
        self.max_new_tokens = max_new_tokens or recipe.eval.max_new_tokens
        self.system = recipe.data.system_prompt
        self.reset()

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history: list[dict] = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, text: str) -> str:
        """Add a user turn, generate the answer, remember both, return the answer."""
        from studio.evaluation.generate import generate

        self.history.append({"role": "user", "content": text})
        answer = generate(self.model, self.tokenizer, [self.renderer.prompt_text(self.history)], self.max_new_tokens, batch_size=1)[0]
        self.history.append({"role": "assistant", "content": answer})
        return answer
