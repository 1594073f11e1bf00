"""The trial ledger: every finished trial of a sweep, written the moment it ends.

Tune's experiment state restores an interrupted sweep on the disk it was written to. A sweep
that outlives its disk (a session that ends, a node that is replaced) needs more: the ledger
is one small JSON file, kept wherever the user says (committed next to the results, or on
S3). A later sweep over the same search replays its trials into TPE, as if they had run in
this sweep, and runs only the trials still missing.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pyarrow as pa

from openmed_ray.config import SweepConfig
from openmed_ray.errors import ConfigError, OpenMedError
from openmed_ray.io.filesystem import resolve, write_bytes_atomic

METRIC = "dev_f1"
HISTORY = "dev_f1_by_epoch"  # every epoch's dev F1 so far, in each reported result
PARAMS = (
    "learning_rate",
    "batch_size",
    "weight_decay",
    "warmup_ratio",
    "lora_rank",
    "lora_dropout",
)


def sweep_fingerprint(config: SweepConfig) -> dict[str, Any]:
    """What two sweeps must share for one's trials to count as observations of the other."""
    finetune = config.finetune
    fingerprint = {
        "dataset": finetune.dataset,
        "backbone": finetune.backbone,
        "method": finetune.method,
        "lora_targets": list(finetune.lora.targets),
        "max_train_sentences": finetune.max_train_sentences,
        "max_epochs": finetune.epochs,
        "learning_rate": list(config.space.learning_rate_range(finetune.method)),
        "space": config.space.to_dict(),
    }
    return json.loads(json.dumps(fingerprint))  # tuples as lists, as they read back


def searched_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config's searched (or fixed) knobs, as the report and the ledger show them."""
    return {k: config[k] for k in PARAMS if k in config}


def trial_row(
    trial_id: str,
    params: dict[str, Any],
    history: list[float],
    *,
    seconds: float,
    stopped_early: bool,
    error: str | None,
    max_epochs: int,
) -> dict[str, Any]:
    """One finished trial: its point, dev F1 per epoch, seconds and how it ended."""
    if error is not None:
        status = "error"
    elif stopped_early:
        status = "early_stopped"  # patience ran out
    elif len(history) < max_epochs:
        status = "pruned"  # ASHA cut it at a rung
    else:
        status = "completed"
    return {
        "trial_id": trial_id,
        "params": params,
        "dev_f1": max(history) if history else None,
        HISTORY: [round(float(v), 6) for v in history],
        "epochs": len(history),
        "seconds": round(float(seconds), 1),
        "status": status,
        "error": None if error is None else (error.strip().splitlines() or [""])[0][:500],
    }


@dataclasses.dataclass
class Ledger:
    uri: str
    sweep_id: str
    fingerprint: dict[str, Any]
    trials: list[dict[str, Any]]

    def record(self, row: dict[str, Any]) -> None:
        """Add or replace (by trial id) one finished trial, and write the file atomically.

        The file is read first: a callback restored with an interrupted sweep holds the
        ledger as it was when Tune saved it, not as the last session left it."""
        current = read_ledger(self.uri)
        self.trials = (current or self).merged([row])
        self.write()

    def write(self) -> None:
        document = {"sweep_id": self.sweep_id, "fingerprint": self.fingerprint}
        document["trials"] = self.trials
        write_bytes_atomic(json.dumps(document, indent=1).encode(), self.uri)

    def merged(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ledger's trials with `rows` on top (same trial id: the row wins), by trial id."""
        by_id = {t["trial_id"]: t for t in self.trials} | {r["trial_id"]: r for r in rows}
        return sorted(by_id.values(), key=lambda t: t["trial_id"])


def read_ledger(uri: str) -> Ledger | None:
    """The ledger at `uri`, or None where there is none yet."""
    filesystem, path = resolve(uri)
    if filesystem.get_file_info(path).type == pa.fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as handle:
        text = handle.read().decode()
    try:
        document = json.loads(text)
        ledger = Ledger(
            uri, str(document["sweep_id"]), dict(document["fingerprint"]), list(document["trials"])
        )
        for number, row in enumerate(ledger.trials, start=1):
            missing = {"trial_id", "params", HISTORY, "status"} - set(row)
            if missing:
                raise ValueError(f"trial {number} lacks {sorted(missing)}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise OpenMedError(f"{uri}: not a sweep trial ledger ({exc}); move it aside") from None
    return ledger


def open_ledger(uri: str, config: SweepConfig) -> Ledger:
    """The sweep's ledger: a new one, or the existing one when it records the same search.

    An existing ledger with trials needs --resume (as Tune's own state does); one recorded
    over another dataset, backbone or space is refused, naming the field that differs."""
    fingerprint = sweep_fingerprint(config)
    ledger = read_ledger(uri)
    if ledger is None:
        ledger = Ledger(uri, uuid.uuid4().hex[:12], fingerprint, [])
        ledger.write()
        return ledger
    if ledger.trials and not config.resume:
        raise OpenMedError(
            f"{uri} already records {len(ledger.trials)} finished trials of sweep "
            f"{ledger.sweep_id}; pass --resume to continue that sweep, or choose another --ledger"
        )
    for field, value in fingerprint.items():
        if ledger.fingerprint.get(field) != value:
            raise ConfigError(
                f"{uri}: its trials were run with {field}={ledger.fingerprint.get(field)!r}, "
                f"this sweep has {field}={value!r}; trials of another search cannot guide this "
                "one: choose another --ledger"
            )
    return ledger
