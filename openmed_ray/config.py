"""Typed, validated configuration: every knob has one home here.

Configs are dataclasses that validate themselves on construction and load from YAML or
plain dicts. Unknown keys are errors (a typo must never be silently ignored).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from openmed_ray.errors import ConfigError

DATA_ROOT_ENV = "OPENMED_RAY_DATA_ROOT"
DEFAULT_DATA_ROOT = "../shared/data"
# The repository checkout this package lives in (meaningful for editable installs).
_REPO_ROOT = Path(__file__).resolve().parent.parent

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for dataclass configs: validation, dict/YAML round trips."""

    def __post_init__(self) -> None:
        # Nested configs may be given as plain dicts (from code or YAML); lists become tuples.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            nested = _config_class(hints.get(f.name))
            if nested is not None and isinstance(value, dict):
                object.__setattr__(self, f.name, nested.from_dict(value, where=f.name))
            elif isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value is out of range."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"{where or cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            nested = _config_class(hints.get(name))
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value, where=f"{where or cls.__name__}.{name}")
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where or cls.__name__}: {exc}") from exc

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        return cls.from_dict(read_yaml(path), where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (not yet validated)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _config_class(hint: Any) -> type[Config] | None:
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, Config):
            return candidate
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def require(condition: bool, field: str, message: str) -> None:
    """Raise a ConfigError naming `field` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The shared data directory: explicit value, else $OPENMED_RAY_DATA_ROOT, else ../shared/data.

    The default is looked up relative to the working directory first and then relative to
    the repository checkout, so it works from the repo root and from anywhere in an
    editable install.
    """
    chosen = explicit or os.environ.get(DATA_ROOT_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = (base / DEFAULT_DATA_ROOT).resolve()
        if candidate.is_dir():
            return candidate
    return (Path.cwd() / DEFAULT_DATA_ROOT).resolve()


# ---------------------------------------------------------------- model and training configs
LORA_TARGET_PRESETS = ("query,value", "all-linear")


@dataclasses.dataclass(frozen=True)
class LoraConfig(Config):
    """LoRA on the encoder. The paper: r=16, alpha=32, dropout 0.05 on query/value."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # module name suffixes, or the single entry "all-linear"
    targets: tuple[str, ...] = ("query", "value")

    def validate(self) -> None:
        require(self.rank > 0, "lora.rank", f"must be > 0, got {self.rank}")
        require(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")
        require(len(self.targets) > 0, "lora.targets", "needs at least one module name")


# Multi-task batch sampling. Every epoch runs as many batches as all datasets hold together;
# "proportional" takes each dataset's batches once (shuffled together), "temperature"
# flattens the shares toward small datasets (resampling them, subsampling large ones), and
# "round-robin" gives every dataset an equal share, cycling through them.
SAMPLINGS = ("proportional", "temperature", "round-robin")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Config):
    """Token-classification fine-tuning (the paper's recipe is the default)."""

    dataset: str = "NCBI-disease"
    # Several benchmarks trained jointly: one shared encoder, one head each, one multi-type
    # bundle (then `dataset` is ignored). Heads are named by `head_names`, else by the
    # catalog name of each dataset's adapter (BC5CDR-chem -> chemical).
    datasets: tuple[str, ...] = ()
    head_names: tuple[str, ...] = ()
    sampling: str = "proportional"  # which dataset each batch comes from; see SAMPLINGS
    sampling_temperature: float = 2.0  # "temperature": P(dataset) ~ batches ** (1 / T)
    backbone: str = "minilm"
    output: str = "runs/finetune"
    method: str = "lora"  # "lora" (frozen backbone + LoRA + head) or "full"
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    learning_rate: float | None = None  # None: 5e-4 for LoRA, 5e-5 for full fine-tuning
    batch_size: int = 32  # global, split across workers
    epochs: int = 10  # upper bound; early stopping usually ends sooner
    patience: int = 3
    max_seconds: float | None = None  # time budget: no new epoch once it would be exceeded
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.1
    # Gradient-norm clipping (the HF Trainer's default); None turns it off. Without it an
    # all-linear LoRA r32 multi-type run at lr 1e-3 collapsed to all-O in its third epoch.
    max_grad_norm: float | None = 1.0
    head_dropout: float = 0.1
    max_length: int = 256  # wordpieces per window, special tokens included
    overlap: int = 50
    decoding: str = "viterbi"  # "viterbi" (constrained BIO) or "argmax"
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None  # None: all cores / workers
    seed: int = 42
    max_train_sentences: int | None = None
    eval_batch_size: int = 64
    data_root: str | None = None
    resume: bool = False
    save_dtype: str = "float32"  # "float16" halves bundle size
    # An NER bundle (catalog name or path) whose weights the run starts from, with a fresh
    # optimizer and schedule: training continued in a later session, e.g. more epochs for a
    # shipped bundle whose dev F1 was still rising.
    init_from: str | None = None

    def validate(self) -> None:
        require(self.method in ("lora", "full"), "method", f"'lora' or 'full', got {self.method!r}")
        require(self.batch_size > 0, "batch_size", "must be > 0")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.patience > 0, "patience", "must be > 0")
        require(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be > 0")
        require(self.workers > 0, "workers", "must be > 0")
        require(
            self.batch_size >= self.workers,
            "batch_size",
            f"global batch {self.batch_size} is smaller than the {self.workers} workers",
        )
        require(self.gpus_per_worker >= 0, "gpus_per_worker", "must be >= 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(
            self.learning_rate is None or self.learning_rate > 0, "learning_rate", "must be > 0"
        )
        require(
            self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0"
        )
        require(self.decoding in ("viterbi", "argmax"), "decoding", "'viterbi' or 'argmax'")
        require(self.max_length > self.overlap + 8, "max_length", "must exceed overlap + 8")
        require(self.overlap >= 0, "overlap", "must be >= 0")
        require(
            self.max_train_sentences is None or self.max_train_sentences > 0,
            "max_train_sentences",
            "must be > 0",
        )
        require(self.save_dtype in ("float32", "float16"), "save_dtype", "float32 or float16")
        require(
            self.sampling in SAMPLINGS, "sampling", f"one of {SAMPLINGS}, got {self.sampling!r}"
        )
        require(self.sampling_temperature >= 1.0, "sampling_temperature", "must be >= 1")
        require(
            len(set(self.datasets)) == len(self.datasets),
            "datasets",
            f"lists a dataset twice: {list(self.datasets)}",
        )
        require(
            not self.head_names or len(self.head_names) == len(self.datasets),
            "head_names",
            f"needs one name per dataset ({len(self.datasets)}), got {list(self.head_names)}",
        )
        require(
            len(set(self.head_names)) == len(self.head_names),
            "head_names",
            f"names a head twice: {list(self.head_names)}",
        )
        require(
            all(":" not in n and "+" not in n and n for n in self.head_names),
            "head_names",
            "must be non-empty and free of ':' and '+' (they select heads: BUNDLE:HEAD+HEAD)",
        )

    @property
    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.method == "lora" else 5e-5

    @property
    def multitask(self) -> bool:
        return bool(self.datasets)

    @property
    def task_datasets(self) -> tuple[str, ...]:
        """The datasets trained: `datasets`, or `dataset` alone."""
        return self.datasets or (self.dataset,)


# How a relation classifier scores an entity pair (models/relation.py): over every pair of
# their mentions, with the mentions' sentence distance, or once from pooled entity vectors.
PAIR_SCORINGS = ("mention-pairs", "entities")


@dataclasses.dataclass(frozen=True)
class RelationTrainConfig(Config):
    """Relation classifier training on a relation benchmark (documents with gold pairs)."""

    dataset: str = "BC5CDR-CID"
    backbone: str = "minilm"
    output: str = "runs/relations"
    method: str = "full"  # "full" fine-tuning, or "lora" (frozen backbone + LoRA + head)
    lora: LoraConfig = dataclasses.field(
        default_factory=lambda: LoraConfig(dropout=0.0, targets=("all-linear",))
    )
    learning_rate: float | None = None  # encoder; None: 5e-5 full, 5e-4 LoRA
    head_learning_rate: float = 1e-3  # the pair head starts from scratch
    pair_scoring: str = "mention-pairs"
    batch_size: int = 4  # documents per step (global)
    epochs: int = 20
    patience: int = 4
    max_seconds: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    dropout: float = 0.1
    max_length: int = 512  # wordpieces per window, markers and special tokens included
    overlap: int = 128
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None
    seed: int = 42
    max_train_documents: int | None = None
    eval_batch_size: int = 8  # documents
    save_dtype: str = "float32"  # "float16" halves bundle size (a full encoder is ~90 MB fp32)
    # A relation bundle (catalog name or path) whose weights the run starts from, with a fresh
    # optimizer and schedule: training continued in a later session, or a related task.
    init_from: str | None = None
    data_root: str | None = None
    resume: bool = False

    def validate(self) -> None:
        require(self.method in ("lora", "full"), "method", f"'lora' or 'full', got {self.method!r}")
        require(self.save_dtype in ("float32", "float16"), "save_dtype", "float32 or float16")
        require(
            self.pair_scoring in PAIR_SCORINGS,
            "pair_scoring",
            f"one of {PAIR_SCORINGS}, got {self.pair_scoring!r}",
        )
        for name in ("batch_size", "epochs", "patience", "workers", "eval_batch_size"):
            require(getattr(self, name) > 0, name, "must be > 0")
        require(
            self.batch_size >= self.workers,
            "batch_size",
            f"global batch {self.batch_size} is smaller than the {self.workers} workers",
        )
        require(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be > 0")
        require(
            self.learning_rate is None or self.learning_rate > 0, "learning_rate", "must be > 0"
        )
        require(self.head_learning_rate > 0, "head_learning_rate", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(self.gpus_per_worker >= 0, "gpus_per_worker", "must be >= 0")
        require(self.max_length > self.overlap + 8, "max_length", "must exceed overlap + 8")
        require(self.overlap >= 0, "overlap", "must be >= 0")
        require(
            self.max_train_documents is None or self.max_train_documents > 0,
            "max_train_documents",
            "must be > 0",
        )

    @property
    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.method == "lora" else 5e-5


def _check_range(field: str, bounds: tuple, low_limit: float, high_limit: float | None) -> None:
    require(len(bounds) == 2, field, f"expects [low, high], got {list(bounds)}")
    low, high = bounds
    require(low <= high, field, f"low {low} exceeds high {high} (contradictory range)")
    require(low >= low_limit, field, f"must be >= {low_limit}, got {low}")
    require(high_limit is None or high < high_limit, field, f"must be < {high_limit}, got {high}")


def _check_choices(field: str, choices: tuple) -> None:
    require(len(choices) > 0, field, "needs at least one choice (empty search space)")
    require(
        all(isinstance(c, int) and c > 0 for c in choices), field, "choices must be integers > 0"
    )
    require(len(set(choices)) == len(choices), field, f"repeated choices in {list(choices)}")


@dataclasses.dataclass(frozen=True)
class SearchSpaceConfig(Config):
    """The paper's HPO space. Ranges are [low, high] (low == high fixes a value)."""

    # log-uniform; None: [1e-4, 3e-3] for LoRA, [1e-5, 2e-4] for full fine-tuning
    learning_rate: tuple[float, float] | None = None
    batch_size: tuple[int, ...] = (16, 32)
    weight_decay: tuple[float, float] = (0.0, 0.1)
    warmup_ratio: tuple[float, float] = (0.0, 0.2)
    lora_rank: tuple[int, ...] = (8, 16, 32)  # LoRA alpha follows as 2 x rank (paper: 32/16)
    lora_dropout: tuple[float, float] = (0.0, 0.1)

    def validate(self) -> None:
        if self.learning_rate is not None:
            _check_range("space.learning_rate", self.learning_rate, 1e-12, 1.0)
        _check_choices("space.batch_size", self.batch_size)
        _check_range("space.weight_decay", self.weight_decay, 0.0, None)
        _check_range("space.warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _check_choices("space.lora_rank", self.lora_rank)
        _check_range("space.lora_dropout", self.lora_dropout, 0.0, 1.0)

    def learning_rate_range(self, method: str) -> tuple[float, float]:
        if self.learning_rate is not None:
            return self.learning_rate
        return (1e-4, 3e-3) if method == "lora" else (1e-5, 2e-4)


# ---------------------------------------------------------------- output ownership
@dataclasses.dataclass(frozen=True)
class ClaimConfig(Config):
    """How a run holds its output (openmed_ray/io/claim.py): a heartbeat while it works; a
    claim whose heartbeat is older than `stale_after_seconds` counts as abandoned. The margin
    must cover clock skew between hosts and pauses of a loaded driver."""

    heartbeat_seconds: float = 10.0
    stale_after_seconds: float = 120.0

    def validate(self) -> None:
        require(self.heartbeat_seconds > 0, "claim.heartbeat_seconds", "must be > 0")
        require(
            self.stale_after_seconds >= 3 * self.heartbeat_seconds,
            "claim.stale_after_seconds",
            f"must be at least 3 heartbeats ({3 * self.heartbeat_seconds:g} s), so one slow "
            "heartbeat never makes a live run look abandoned",
        )


@dataclasses.dataclass(frozen=True)
class SweepConfig(Config):
    """A Ray Tune + OptunaSearch (TPE) sweep over `space`, then one final training and test.

    `finetune` holds everything the trials share (dataset, backbone, method, LoRA targets,
    capped training set); its `epochs` is the per-trial maximum and ASHA's horizon. The final
    training of the best point runs on the full training set (the paper's protocol) for
    `final_epochs`, early stopping on dev as usual.
    """

    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    space: SearchSpaceConfig = dataclasses.field(default_factory=SearchSpaceConfig)
    output: str = "runs/sweep"  # sweep.json, sweep.md, sweep.png and final/ (the adapter)
    storage: str | None = None  # Tune's experiment state, local or s3://; None: OUTPUT/tune
    # Every finished trial, written as it ends (hpo/ledger.py); keep it where it outlives
    # the disk (committed, or s3://) and a new sweep continues from it. None: OUTPUT/trials.json
    ledger: str | None = None
    trials: int = 40
    concurrency: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share a GPU between trials
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: int = 2
    trial_retries: int = 2  # restarts of a trial whose process died (from its last epoch)
    seed: int = 42  # TPE sampler and the final training
    final_epochs: int | None = None  # None: the trials' max epochs
    # None: the full training set; a number caps the final training like the trials
    final_train_sentences: int | None = None
    resume: bool = False
    claim: ClaimConfig = dataclasses.field(default_factory=ClaimConfig)

    def validate(self) -> None:
        require(self.trials > 0, "trials", "must be > 0")
        require(self.concurrency > 0, "concurrency", "must be > 0")
        require(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")
        require(self.gpus_per_trial >= 0, "gpus_per_trial", "must be >= 0")
        require(self.grace_period >= 1, "grace_period", "must be >= 1")
        require(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        require(self.trial_retries >= 0, "trial_retries", "must be >= 0")
        require(
            self.grace_period <= self.finetune.epochs,
            "grace_period",
            f"must not exceed the trials' max epochs ({self.finetune.epochs})",
        )
        require(bool(self.output), "output", "is required")
        require(self.final_epochs is None or self.final_epochs > 0, "final_epochs", "must be > 0")
        require(
            self.finetune.init_from is None,
            "finetune.init_from",
            "sweep trials start from the backbone (their LoRA rank varies); continue a bundle's "
            "training with `openmed-ray finetune --init-from` instead",
        )
        require(
            self.final_train_sentences is None or self.final_train_sentences > 0,
            "final_train_sentences",
            "must be > 0",
        )

    @property
    def storage_uri(self) -> str:
        return self.storage or str(Path(self.output).expanduser().resolve() / "tune")

    @property
    def ledger_uri(self) -> str:
        return self.ledger or str(Path(self.output).expanduser().resolve() / "trials.json")


def load_with_overrides(
    cls: type[C],
    path: str | Path | None,
    overrides: dict[str, Any],
    nested: dict[str, dict[str, Any]] | None = None,
) -> C:
    """A config from an optional YAML file, with non-None command-line values on top.

    The file may hold only some fields (the flags give the rest): the merged values are
    validated once, as a whole."""
    base = read_yaml(path) if path else {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    base.update({k: v for k, v in overrides.items() if k in names and v is not None})
    for field_name, values in (nested or {}).items():
        chosen = {k: v for k, v in values.items() if v is not None}
        if chosen:
            base[field_name] = {**base.get(field_name, {}), **chosen}
    return cls.from_dict(base)


PRECISIONS = ("fp32", "bf16", "int8")  # inference: float32, bfloat16, dynamic int8
RUNTIMES = ("torch", "onnx")  # onnx: ONNX Runtime (fp32 or int8), the `onnx` extra
COMPILE_MODES = ("auto", "on", "off")  # torch.compile of fp32/bf16 models; models/compiled.py


@dataclasses.dataclass(frozen=True)
class AnnotateConfig(Config):
    """Batch annotation of a Parquet corpus (local or s3://) with one pass per batch."""

    input: str = ""
    output: str = ""
    adapters: tuple[str, ...] = ()  # empty: the shipped defaults (models/catalog.py)
    id_column: str = "doc_id"
    text_column: str = "text"
    batch_size: int = 64  # windows per forward pass
    docs_per_batch: int = 256  # documents per Ray Data batch handed to an actor
    rows_per_file: int = 20_000  # documents per output file pair (entities + documents)
    min_actors: int = 1
    max_actors: int | None = None  # None: one per spare CPU, at least 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    threads_per_actor: int | None = None  # None: node CPUs / actors per node
    threshold: float = 0.0
    aggregation: str = "first"  # first | average | max | simple
    # auto (int8 on CPU where the card's measured F1 loss is within 0.3 pp, bf16 on GPU,
    # else fp32; see models/precision.py) | fp32 | bf16 | int8 (dynamic, per channel)
    precision: str = "auto"
    runtime: str = "torch"  # torch | onnx (ONNX Runtime; fp32 or int8)
    # auto (compile when each actor sees enough documents to pay back the compile) | on | off
    compile: str = "auto"
    # Forward passes each actor keeps in flight on a CPU, sharing its threads
    # (models/inference.py); None: auto (2 where an actor has 2 or more threads)
    streams: int | None = None
    resume: bool = False
    claim: ClaimConfig = dataclasses.field(default_factory=ClaimConfig)
    # Transient storage errors (a dropped S3 connection) are retried per part with
    # exponential backoff; a full disk or a lost claim fails at once.
    write_attempts: int = 4
    write_backoff_seconds: float = 2.0

    def validate(self) -> None:
        require(bool(self.input), "input", "is required (a Parquet file, directory or s3:// URI)")
        require(bool(self.output), "output", "is required (a directory or s3:// URI)")
        require(bool(self.id_column), "id_column", "must not be empty")
        require(bool(self.text_column), "text_column", "must not be empty")
        require(self.id_column != self.text_column, "id_column", "must differ from text_column")
        require(self.batch_size > 0, "batch_size", "must be > 0")
        require(self.docs_per_batch > 0, "docs_per_batch", "must be > 0")
        require(self.rows_per_file > 0, "rows_per_file", "must be > 0")
        require(self.min_actors >= 1, "min_actors", "must be >= 1")
        require(
            self.max_actors is None or self.max_actors >= self.min_actors,
            "max_actors",
            f"must be >= min_actors ({self.min_actors})",
        )
        require(self.cpus_per_actor > 0, "cpus_per_actor", "must be > 0")
        require(self.gpus_per_actor >= 0, "gpus_per_actor", "must be >= 0")
        require(0.0 <= self.threshold <= 1.0, "threshold", "must be in [0, 1]")
        require(
            self.aggregation in ("first", "average", "max", "simple"),
            "aggregation",
            "first, average, max or simple",
        )
        require(
            self.precision in ("auto", *PRECISIONS), "precision", f"auto or one of {PRECISIONS}"
        )
        require(self.runtime in RUNTIMES, "runtime", f"one of {RUNTIMES}")
        require(self.compile in COMPILE_MODES, "compile", f"one of {COMPILE_MODES}")
        require(self.streams is None or self.streams >= 1, "streams", "must be >= 1")
        require(
            not (self.runtime == "onnx" and self.precision == "bf16"),
            "precision",
            "the onnx runtime runs fp32 or int8",
        )
        require(all(a and a.strip() == a for a in self.adapters), "adapters", "empty adapter name")
        require(self.write_attempts >= 1, "write_attempts", "must be >= 1")
        require(self.write_backoff_seconds >= 0, "write_backoff_seconds", "must be >= 0")

    @property
    def device(self) -> str:
        """Where the actors run their models."""
        return "cuda" if self.gpus_per_actor > 0 else "cpu"


def parse_actor_range(text: str) -> tuple[int, int | None]:
    """`MIN:MAX`, `N` (fixed) or `MIN:` (autoscale up to the cluster) for --actors."""
    try:
        if ":" in text:
            low, high = text.split(":", 1)
            return int(low), (int(high) if high else None)
        return int(text), int(text)
    except ValueError:
        raise ConfigError(f"--actors: expected MIN:MAX or N, got {text!r}") from None


# ---------------------------------------------------------------- domain-adaptive pre-training
@dataclasses.dataclass(frozen=True)
class CorpusConfig(Config):
    """Raw JSONL(.gz) corpora to Parquet passages for DAPT (train and held-out files)."""

    source: str = ""  # a JSONL(.gz) file or a directory of them
    output: str = ""  # training passages; held-out passages go to <stem>.heldout.parquet
    heldout: str | None = None  # None: <output stem>.heldout.parquet
    backbone: str = "minilm"  # whose tokenizer counts wordpieces
    license_filter: tuple[str, ...] = ()  # e.g. ("cc0", "cc-by"); empty: keep every licence
    max_docs: int | None = None  # documents kept at most (after the filters), in input order
    min_wordpieces: int = 50  # per passage, special tokens included
    max_wordpieces: int = 256
    heldout_fraction: float = 0.02  # share of documents (by a hash of their id)
    exclude_benchmark_pmids: bool = True  # drop documents in a benchmark's dev or test set
    data_root: str | None = None  # where normalization/ (PubTator) and bioner/ live
    seed: int = 42  # order of the passages in the written files

    def validate(self) -> None:
        require(bool(self.source), "source", "is required (a JSONL(.gz) file or directory)")
        require(bool(self.output), "output", "is required (a .parquet path)")
        require(self.max_docs is None or self.max_docs > 0, "max_docs", "must be > 0")
        require(self.min_wordpieces > 2, "min_wordpieces", "must exceed the 2 special tokens")
        require(
            self.max_wordpieces >= self.min_wordpieces,
            "max_wordpieces",
            f"must be >= min_wordpieces ({self.min_wordpieces})",
        )
        require(0.0 <= self.heldout_fraction < 1.0, "heldout_fraction", "must be in [0, 1)")
        require(all(self.license_filter), "license_filter", "empty licence name")


@dataclasses.dataclass(frozen=True)
class DaptConfig(Config):
    """LoRA masked-LM domain-adaptive pre-training on Ray Train (Ray Data shards the corpus)."""

    corpus: str = ""  # Parquet passages (file, directory or s3://)
    heldout: str | None = None  # None: <corpus stem>.heldout.parquet when it exists
    backbone: str = "minilm"
    output: str = "runs/dapt"  # adapter/, backbone/ (merged), dapt.json, ray/
    text_column: str = "text"
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    batch_size: int = 32  # global sequences per micro-step, split across workers
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 1000  # optimizer steps
    warmup_steps: int = 500  # capped at 10% of max_steps, then cosine decay
    seq_len: int = 256  # wordpieces per sequence, special tokens included
    mlm_probability: float = 0.15
    checkpoint_every: int = 100  # steps between checkpoints (the last step always has one)
    eval_passages: int = 512  # held-out passages for perplexity (0: skip it)
    eval_batch_size: int = 16
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None  # None: all cores / workers
    seed: int = 42
    resume: bool = False

    def validate(self) -> None:
        require(bool(self.corpus), "corpus", "is required (Parquet passages from `corpus`)")
        require(bool(self.text_column), "text_column", "must not be empty")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.workers > 0, "workers", "must be > 0")
        require(
            self.batch_size > 0 and self.batch_size % self.workers == 0,
            "batch_size",
            f"must be a positive multiple of the {self.workers} worker(s)",
        )
        require(self.grad_accum > 0, "grad_accum", "must be > 0")
        require(self.max_steps > 0, "max_steps", "must be > 0")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.seq_len > 8, "seq_len", "must be > 8")
        require(0.0 < self.mlm_probability < 1.0, "mlm_probability", "must be in (0, 1)")
        require(self.checkpoint_every > 0, "checkpoint_every", "must be > 0")
        require(self.eval_passages >= 0, "eval_passages", "must be >= 0")
        require(self.eval_batch_size > 0, "eval_batch_size", "must be > 0")
        require(self.gpus_per_worker >= 0, "gpus_per_worker", "must be >= 0")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")

    @property
    def effective_warmup_steps(self) -> int:
        """The paper's 500 warm-up steps, scaled down for short runs (at most 10% of them)."""
        return min(self.warmup_steps, self.max_steps // 10)


# ---------------------------------------------------------------- knowledge graph
KG_LEVELS = ("sentence", "document")
LINK_TIERS = ("exact", "case", "punct", "abbreviation", "tfidf")
# The splits the built-in linking dictionary may read (never test: it stays unseen).
LINK_DICTIONARY_SPLITS = ("train", "dev")
# Engine and corpus labels -> ontology types; a label not listed is its own type.
DEFAULT_LABEL_TYPES = {
    "Chemical": "Chemical",
    "Disease": "Disease",
    "SpecificDisease": "Disease",
    "DiseaseClass": "Disease",
    "Modifier": "Disease",
    "CompositeMention": "Disease",
    "GENE": "Gene",
    "Gene": "Gene",
    "protein": "Gene",
    "DNA": "Gene",
    "RNA": "Gene",
    "Species": "Species",
}


@dataclasses.dataclass(frozen=True)
class LinkerConfig(Config):
    """Dictionary + abbreviation + character 3-gram TF-IDF linking to ontology IDs."""

    builtin: bool = True  # BC5CDR + NCBI-disease train/dev strings from the data root
    # Which splits the built-in dictionary reads: ("train",) links dev text as unseen text.
    builtin_splits: tuple[str, ...] = LINK_DICTIONARY_SPLITS
    data_root: str | None = None
    dictionaries: tuple[str, ...] = ()  # user TSVs: string<TAB>id<TAB>type
    threshold: float = 0.7  # TF-IDF cosine similarity needed to link
    ngram: int = 3
    tiers: tuple[str, ...] = LINK_TIERS
    label_types: dict[str, str] = dataclasses.field(default_factory=dict)  # on top of defaults

    def validate(self) -> None:
        require(0.0 < self.threshold <= 1.0, "linker.threshold", "must be in (0, 1]")
        require(self.ngram >= 2, "linker.ngram", "must be >= 2")
        bad = sorted(set(self.builtin_splits) - set(LINK_DICTIONARY_SPLITS))
        require(
            bool(self.builtin_splits) and not bad,
            "linker.builtin_splits",
            f"choose one or more of {LINK_DICTIONARY_SPLITS}" + (f"; unknown {bad}" if bad else ""),
        )
        unknown = sorted(set(self.tiers) - set(LINK_TIERS))
        require(not unknown, "linker.tiers", f"unknown {unknown}; choose from {LINK_TIERS}")
        require(
            all(isinstance(v, str) and v for v in self.label_types.values()),
            "linker.label_types",
            "every label needs a non-empty type name",
        )

    @property
    def label_map(self) -> dict[str, str]:
        """Label -> ontology type: the defaults with this config's entries on top."""
        return {**DEFAULT_LABEL_TYPES, **self.label_types}


@dataclasses.dataclass(frozen=True)
class KGConfig(Config):
    """Knowledge-graph extraction: link entities, count co-occurrences, merge incrementally."""

    entities: str = ""  # annotate output(s): partitions are its children (see openmed_ray/kg)
    documents: str = ""  # Parquet corpus with the texts (local or s3://)
    graph: str = ""  # local directory holding the versioned graph states
    id_column: str = "doc_id"
    text_column: str = "text"
    levels: tuple[str, ...] = KG_LEVELS
    type_pairs: tuple[str, ...] = ()  # e.g. ("Chemical-Disease",); empty: any two types
    min_score: float = 0.0  # entities scored lower are ignored
    min_count: int = 1  # exports keep edges with at least this pair_count
    examples: int = 3  # example doc_ids per edge (the smallest ids, so merges stay exact)
    replace: tuple[str, ...] = ()  # merged partitions to substitute with their new content
    rebuild: bool = False  # re-derive every merged partition (after a settings change)
    linker: LinkerConfig = dataclasses.field(default_factory=LinkerConfig)
    docs_per_batch: int = 256
    actors: int = 1
    cpus_per_actor: float = 0.5
    keep_states: int = 2  # graph versions kept on disk (the current one included)
    claim: ClaimConfig = dataclasses.field(default_factory=ClaimConfig)
    relations: str = ""  # relation bundle (name or path) scoring candidate pairs; "" = none
    relation_threads: int | None = None  # torch threads per actor; None: cpus_per_actor, >= 1
    min_relation_score: float | None = None  # exports keep pairs scored this high; None: the
    # bundle's dev-chosen threshold (its pipeline-calibrated one where the card has it)

    def validate(self) -> None:
        for name in ("entities", "documents", "graph"):
            require(bool(getattr(self, name)), name, "is required")
        require(self.id_column != self.text_column, "id_column", "must differ from text_column")
        require(bool(self.levels), "levels", f"needs at least one of {KG_LEVELS}")
        bad = [level for level in self.levels if level not in KG_LEVELS]
        require(not bad, "levels", f"unknown {bad}; choose from {KG_LEVELS}")
        for pair in self.type_pairs:
            parts = pair.split("-")
            require(
                len(parts) == 2 and all(parts), "type_pairs", f"expected TYPE-TYPE, got {pair!r}"
            )
        require(0.0 <= self.min_score <= 1.0, "min_score", "must be in [0, 1]")
        require(self.min_count >= 1, "min_count", "must be >= 1")
        require(self.examples >= 0, "examples", "must be >= 0")
        require(self.docs_per_batch > 0, "docs_per_batch", "must be > 0")
        require(self.actors >= 1, "actors", "must be >= 1")
        require(self.cpus_per_actor > 0, "cpus_per_actor", "must be > 0")
        require(self.keep_states >= 2, "keep_states", "must be >= 2 (the current and previous)")
        require(
            self.min_relation_score is None or 0.0 <= self.min_relation_score <= 1.0,
            "min_relation_score",
            "must be in [0, 1]",
        )
        require(
            self.relation_threads is None or self.relation_threads >= 1,
            "relation_threads",
            "must be >= 1",
        )
        require(
            self.min_relation_score is None or bool(self.relations),
            "min_relation_score",
            "needs a relation bundle (relations / --relations)",
        )

    @property
    def allowed_type_pairs(self) -> frozenset[tuple[str, str]] | None:
        """Sorted (type, type) pairs an edge may join; None: any two different types."""
        if not self.type_pairs:
            return None
        return frozenset(tuple(sorted(pair.split("-"))) for pair in self.type_pairs)


CALIBRATION_LINK_SPLITS = ("train",)


def _calibration_linker(linker: Any) -> Any:
    if isinstance(linker, dict) and "builtin_splits" not in linker:
        return {**linker, "builtin_splits": CALIBRATION_LINK_SPLITS}
    return linker


@dataclasses.dataclass(frozen=True)
class RelationCalibrationConfig(Config):
    """The graph threshold of a relation bundle, chosen on gold-annotated dev documents
    through the whole pipeline: annotate, link, score every candidate pair, keep the best F1."""

    bundle: str = ""  # relation bundle (name or path); its card receives the threshold
    gold: str = ""  # PubTator file: the dev documents with their gold relations
    work: str = ""  # a new or empty directory for the texts, annotations and graph
    adapters: tuple[str, ...] = ("chemical", "disease")  # the NER adapters finding mentions
    precision: str = "auto"  # the NER adapters' precision, as in `annotate`
    max_actors: int | None = None  # annotation actors; None: one per spare CPU
    threads_per_actor: int | None = None
    relation_threads: int | None = None  # torch threads of the relation actor
    # Dev text must link as unseen text does: the built-in dictionary from train alone.
    linker: LinkerConfig = dataclasses.field(
        default_factory=lambda: LinkerConfig(builtin_splits=CALIBRATION_LINK_SPLITS)
    )
    write_card: bool = True  # False: report the threshold without changing the bundle

    # Linker settings given as a mapping (YAML, flags, code) keep the train-only default
    # unless they name their own splits.
    def __post_init__(self) -> None:
        object.__setattr__(self, "linker", _calibration_linker(self.linker))
        super().__post_init__()

    @classmethod
    def from_dict(
        cls, data: dict[str, Any] | None, *, where: str = ""
    ) -> RelationCalibrationConfig:
        data = dict(data or {})
        if "linker" in data:
            data["linker"] = _calibration_linker(data["linker"])
        return super().from_dict(data, where=where)

    def validate(self) -> None:
        for name in ("bundle", "gold", "work"):
            require(bool(getattr(self, name)), name, "is required")
        require(bool(self.adapters), "adapters", "needs the NER adapters that find the mentions")
        require(all(a and a.strip() == a for a in self.adapters), "adapters", "empty adapter name")
        require(
            self.precision in ("auto", *PRECISIONS), "precision", f"auto or one of {PRECISIONS}"
        )
        require(self.max_actors is None or self.max_actors >= 1, "max_actors", "must be >= 1")
        for name in ("threads_per_actor", "relation_threads"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, "must be >= 1")
