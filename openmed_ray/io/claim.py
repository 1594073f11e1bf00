"""One writer per output: a run claims its output location before its first write.

    ROOT/_claim/g00000003.json        the owner: run id, host, pid, start, Ray job, command;
                                      created exclusively and never rewritten
    ROOT/_claim/g00000003.heartbeat   rewritten by the owner every heartbeat_seconds
    ROOT/_claim/g00000003.released    written when the owner stops (finished or failed)

The highest generation is the claim. A run acquires it by creating the next generation
exclusively: a hard link on local disk (atomic on POSIX and NFS), a PUT with
`If-None-Match: *` on S3. Of two runs that race, exactly one creates it, whether both found
the location free or both are taking over the same dead owner; the other is refused with the
winner's run id. Older generations are history (the last one is kept for error messages).

An unreleased claim belongs to a live run unless its owner is provably gone: on this host
its process no longer exists, or its heartbeat is older than `stale_after_seconds`. Only a
caller that asks to take over (annotate's and tune's `--resume`) may replace a gone owner;
nobody may replace a live one.

Writers check their claim before each commit (`ClaimFence.verify`), so a run that was
declared gone while it was in fact alive (a frozen driver) stops instead of writing beside
its successor.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from openmed_ray.config import ClaimConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.filesystem import is_remote, join, resolve, s3fs_filesystem

log = logging.getLogger(__name__)

CLAIM_DIR = "_claim"
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor

# Generations this process holds right now: an owner record naming this very process but
# not held here belongs to a run that ended without releasing (its release write failed).
_HELD: set[tuple[str, int]] = set()


class OutputClaimedError(OpenMedError):
    """Another run owns the output (or won the race to claim it)."""

    def __init__(self, message: str, owner: Owner | None) -> None:
        super().__init__(message)
        self.owner = owner


class ClaimLostError(OpenMedError):
    """A run's claim was taken over by another run; it must stop writing."""


class ConditionalWriteUnsupportedError(OpenMedError):
    """The object store ignores `If-None-Match: *`, so no exclusive claim is possible."""


@dataclass(frozen=True)
class Owner:
    run_id: str
    purpose: str  # annotate | kg | tune
    host: str
    pid: int
    pid_started: float  # the process's start time: a reused pid is another process
    started_at: str
    ray_job: str | None  # the Ray job submission id when run by `ray job submit`
    command: str

    def describe(self) -> str:
        job = f", Ray job {self.ray_job}" if self.ray_job else ""
        return f"{self.purpose} run {self.run_id} (host {self.host}, pid {self.pid}{job}, started {self.started_at})"

    def is_this_process(self) -> bool:
        return (
            self.host == socket.gethostname()
            and self.pid == os.getpid()
            and abs(self.pid_started - _process_started(os.getpid())) < 1.0
        )


@dataclass(frozen=True)
class ClaimState:
    """What the claim directory says right now."""

    generation: int  # 0: never claimed
    owner: Owner | None
    released: dict[str, Any] | None
    heartbeat_age: float | None  # seconds since the owner's last heartbeat (or its claim)

    def gone_reason(self, stale_after: float) -> str | None:
        """Why the owner has certainly stopped, or None while it may still be running."""
        if self.owner is None:
            return "nobody holds it"
        if self.released is not None:
            return f"it was released ({self.released.get('outcome', 'finished')})"
        owner = self.owner
        if owner.host == socket.gethostname():
            if owner.is_this_process() and (owner.run_id, self.generation) not in _HELD:
                return "its run ended in this process without releasing it"
            if not owner.is_this_process() and not _process_alive(owner.pid, owner.pid_started):
                return f"its process (pid {owner.pid} on {owner.host}) no longer exists"
        if self.heartbeat_age is not None and self.heartbeat_age > stale_after:
            return f"its last heartbeat was {self.heartbeat_age:.0f} s ago (> {stale_after:g} s)"
        return None


class _Store(Protocol):
    """The few operations a claim needs, on one directory."""

    def names(self) -> list[str]: ...
    def read(self, name: str) -> bytes | None: ...
    def create(self, name: str, data: bytes) -> bool: ...  # exclusive; False: it exists
    def write(self, name: str, data: bytes) -> None: ...
    def age(self, name: str) -> float | None: ...  # seconds since last modified
    def delete(self, name: str) -> None: ...


class _LocalStore:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.directory.iterdir())
        except FileNotFoundError:
            return []

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def _temporary(self, name: str, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{name}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return temporary

    def create(self, name: str, data: bytes) -> bool:
        # A hard link publishes the complete file or fails if the name exists: readers never
        # see a half-written owner record (O_EXCL would show an empty file for a moment).
        temporary = self._temporary(name, data)
        try:
            os.link(temporary, self.directory / name)
            return True
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)

    def write(self, name: str, data: bytes) -> None:
        os.replace(self._temporary(name, data), self.directory / name)

    def age(self, name: str) -> float | None:
        try:
            return max(0.0, time.time() - (self.directory / name).stat().st_mtime)
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)


class _S3Store:
    def __init__(self, uri: str) -> None:
        self.fs = s3fs_filesystem()
        self.prefix = uri[len("s3://") :].rstrip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """An s3fs call whose connection failures surface as OSError, so the callers'
        retries of transient storage errors (retry_transient) apply to them too."""
        from botocore.exceptions import BotoCoreError

        try:
            return getattr(self.fs, method)(*args, **kwargs)
        except BotoCoreError as exc:
            raise ConnectionError(f"S3 {method} {args[0] if args else ''}: {exc}") from exc

    def names(self) -> list[str]:
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in self._call("ls", self.prefix, detail=False))
        except FileNotFoundError:
            return []

    def read(self, name: str) -> bytes | None:
        try:
            return self._call("cat_file", self._key(name))
        except FileNotFoundError:
            return None

    def create(self, name: str, data: bytes) -> bool:
        try:
            self._call("pipe_file", self._key(name), data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            # 412 PreconditionFailed without the condition name, or 409 when two
            # conditional PUTs on one key overlap: either way another writer got there.
            if exc.errno == errno.EINVAL or "ConditionalRequestConflict" in str(exc):
                return False
            raise

    def write(self, name: str, data: bytes) -> None:
        self._call("pipe_file", self._key(name), data)

    def age(self, name: str) -> float | None:
        try:
            modified = self._call("info", self._key(name))["LastModified"]
        except FileNotFoundError:
            return None
        return max(0.0, time.time() - modified.timestamp())

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("rm_file", self._key(name))


def _store(root: str) -> _Store:
    directory = join(str(root), CLAIM_DIR)
    if str(root).startswith("s3://"):
        return _S3Store(directory)
    if is_remote(root):
        raise OpenMedError(
            f"{root}: claims need local disk or s3:// (exclusive create); other filesystems "
            "cannot guarantee one writer"
        )
    return _LocalStore(resolve(directory)[1])


def _generation_name(generation: int, suffix: str) -> str:
    return f"g{generation:08d}.{suffix}"


def _process_started(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def _process_alive(pid: int, started: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists; we may not inspect it, so it may be the owner


def _ray_job() -> str | None:
    try:
        metadata = json.loads(os.environ.get(RAY_JOB_CONFIG_ENV, "{}")).get("metadata", {})
    except json.JSONDecodeError:
        return None
    return metadata.get("job_submission_id")


def read_claim(root: str) -> ClaimState:
    """The claim state of an output location (local or s3://)."""
    return _read_state(_store(root))


def _read_state(store: _Store) -> ClaimState:
    names = set(store.names())
    generations = [
        int(n[1:9]) for n in names if n.startswith("g") and n.endswith(".json") and n[1:9].isdigit()
    ]
    if not generations:
        return ClaimState(0, None, None, None)
    generation = max(generations)
    record = store.read(_generation_name(generation, "json"))
    if record is None:  # pruned between the listing and the read: a newer one exists
        return _read_state(store)
    owner = Owner(**json.loads(record))
    released_name = _generation_name(generation, "released")
    data = store.read(released_name) if released_name in names else None
    released = json.loads(data) if data is not None else None
    heartbeat = store.age(_generation_name(generation, "heartbeat"))
    age = heartbeat if heartbeat is not None else store.age(_generation_name(generation, "json"))
    return ClaimState(generation, owner, released, age)


def _check_conditional_writes(store: _Store, root: str) -> None:
    """Refuse a store that accepts a second exclusive create of one key: two runs could
    then both believe they own the output."""
    probe = f".probe-{uuid.uuid4().hex}"
    try:
        if not store.create(probe, b"1"):
            raise OSError(f"fresh probe key {probe} already exists")
        if store.create(probe, b"2"):
            raise ConditionalWriteUnsupportedError(
                f"{root}: the object store accepted a second PUT with If-None-Match: * on one "
                "key, so it cannot guarantee a single writer (AWS S3, MinIO, Ceph RGW and "
                "moto honour it); use a store that does"
            )
    finally:
        store.delete(probe)


@dataclass(frozen=True)
class ClaimFence:
    """What a writer (a Ray task) carries to check its run still owns the output."""

    root: str
    generation: int
    run_id: str

    def verify(self) -> None:
        state = read_claim(self.root)
        if state.generation != self.generation or state.released is not None:
            taker = state.owner.describe() if state.owner else "nobody"
            raise ClaimLostError(
                f"{self.root}: run {self.run_id} no longer owns this output (claim "
                f"{self.generation}; now claim {state.generation}, {taker}); it stops "
                "without writing"
            )


class Claim:
    """A held claim: heartbeats in a background thread until released.

    Use as a context manager: leaving the block releases it with the outcome (finished, or
    the error that stopped the run)."""

    def __init__(
        self, root: str, store: _Store, generation: int, owner: Owner, previous: Owner | None
    ):
        self.root = root
        self.store = store
        self.generation = generation
        self.owner = owner
        self.taken_over_from = previous
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _HELD.add((owner.run_id, generation))

    @property
    def fence(self) -> ClaimFence:
        return ClaimFence(self.root, self.generation, self.owner.run_id)

    def beat(self) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.store.write(_generation_name(self.generation, "heartbeat"), stamp.encode())

    def start_heartbeat(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.beat()
                except Exception as exc:  # a storage outage must not kill the run itself
                    log.warning("claim heartbeat on %s failed: %s", self.root, exc)

        self._thread = threading.Thread(target=loop, name="openmed-ray-claim", daemon=True)
        self._thread.start()

    def release(self, outcome: str = "finished") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _HELD.discard((self.owner.run_id, self.generation))
        record = {
            "outcome": outcome,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.store.create(
            _generation_name(self.generation, "released"), json.dumps(record).encode()
        )

    def describe(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "run_id": self.owner.run_id,
            "taken_over_from": self.taken_over_from.run_id if self.taken_over_from else None,
        }

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        outcome = "finished" if error is None else f"failed: {type(error).__name__}: {error}"
        try:
            self.release(outcome[:500])
        except Exception as exc:
            # Storage is down (or full): the claim stays until a --resume sees this
            # process gone. The run's own error, if any, is the one to report.
            log.warning("could not release the claim on %s: %s", self.root, exc)


def acquire_claim(
    root: str,
    run_id: str,
    *,
    purpose: str,
    takeover: bool,
    config: ClaimConfig,
    takeover_hint: str = "pass --resume",
) -> Claim:
    """Claim `root` for this run, or raise OutputClaimedError naming the owner.

    A released claim (or none) is free. An unreleased one is taken over only when
    `takeover` is set and its owner is provably gone; a live owner is never replaced."""
    store = _store(root)
    if isinstance(store, _S3Store):
        _check_conditional_writes(store, root)
    state = _read_state(store)
    previous = None
    if state.owner is not None and state.released is None:
        reason = state.gone_reason(config.stale_after_seconds)
        age = f"{state.heartbeat_age:.0f} s" if state.heartbeat_age is not None else "unknown"
        if reason is None:
            raise OutputClaimedError(
                f"{root} is owned by {state.owner.describe()}, alive (last heartbeat {age} "
                f"ago); a second run never writes beside it. Wait for it to finish or stop it "
                f"(a claim is abandoned once its process is gone, or its heartbeat is older "
                f"than {config.stale_after_seconds:g} s), then {takeover_hint}",
                state.owner,
            )
        if not takeover:
            raise OutputClaimedError(
                f"{root} is still claimed by {state.owner.describe()}, which stopped without "
                f"releasing it ({reason}); {takeover_hint} to take it over and finish its work",
                state.owner,
            )
        previous = state.owner
        log.warning("taking over %s from %s: %s", root, state.owner.describe(), reason)
    pid = os.getpid()
    owner = Owner(
        run_id=run_id,
        purpose=purpose,
        host=socket.gethostname(),
        pid=pid,
        pid_started=_process_started(pid),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ray_job=_ray_job(),
        command=" ".join(sys.argv)[:500],
    )
    generation = state.generation + 1
    if not store.create(_generation_name(generation, "json"), json.dumps(asdict(owner)).encode()):
        winner = _read_state(store).owner
        raise OutputClaimedError(
            f"{root} was claimed at the same moment by "
            f"{winner.describe() if winner else 'another run'}; this run stopped before "
            "writing anything",
            winner,
        )
    claim = Claim(root, store, generation, owner, previous)
    claim.beat()
    claim.start_heartbeat(config.heartbeat_seconds)
    _prune(store, generation)
    return claim


def _prune(store: _Store, generation: int) -> None:
    """Drop generations older than the previous one (history, never consulted)."""
    for name in store.names():
        if name.startswith("g") and name[1:9].isdigit() and int(name[1:9]) < generation - 1:
            store.delete(name)
