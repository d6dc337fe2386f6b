"""A conversation with a run's adapter (or its base model), keeping the history in the chat template."""

from __future__ import annotations

from pathlib import Path


class ChatSession:
    """Loads the base (and the adapter) once, then answers turns with greedy decoding."""

    def __init__(self, run_dir: str | Path, use_adapter: bool = True, max_new_tokens: int | None = None):
        from peft import PeftModel

        from .data import Renderer
        from .model_source import resolve_model
        from .models import load_base, load_tokenizer, pick_device, pick_dtype
        from .recipe_io import load_recipe
        from .rundir import ADAPTER, RECIPE, check_run_dir

        run_dir = check_run_dir(run_dir)
        recipe = load_recipe(run_dir / RECIPE)
        device = pick_device(recipe.train.device)
        self.tokenizer = load_tokenizer(run_dir / ADAPTER, recipe)
        self.model = load_base(resolve_model(recipe.model.name, recipe.model.revision), pick_dtype(recipe.model.dtype, device), device, recipe.model.trust_remote_code, allow_pickle=recipe.model.allow_pickle)
        if use_adapter:
            self.model = PeftModel.from_pretrained(self.model, run_dir / ADAPTER).eval()
        self.renderer = Renderer(self.tokenizer, recipe.data.max_length)
        self.max_new_tokens = max_new_tokens or recipe.eval.max_new_tokens
        self.system = recipe.data.system_prompt
        self.reset()

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history: list[dict] = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, text: str) -> str:
        """Add a user turn, generate the answer, remember both, return the answer."""
        from .generate import generate

        self.history.append({"role": "user", "content": text})
        answer = generate(self.model, self.tokenizer, [self.renderer.prompt_text(self.history)], self.max_new_tokens, batch_size=1)[0]
        self.history.append({"role": "assistant", "content": answer})
        return answer
