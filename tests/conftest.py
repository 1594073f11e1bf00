"""Shared fixtures: a tiny BERT backbone and a tiny benchmark built inside the test session."""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from openmed_ray.runtime import free_port

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING", "0")

CHEMICALS = ["aspirin", "ibuprofen", "cisplatin", "heparin", "warfarin", "lithium"]
DISEASES = ["asthma", "fever", "migraine", "anemia", "sepsis", "gout"]
FILLER = ["the", "patient", "had", "was", "given", "after", "with", "severe", "and", "of", "a"]
PUNCT = [".", ",", "(", ")", "-"]
SUFFIX_PIECES = ["##s", "##ic", "##al"]
MARKERS = ["*"]  # the relation models' entity marker


def tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = ["##" + c for c in letters]
    words = CHEMICALS + DISEASES + FILLER + PUNCT + SUFFIX_PIECES
    return specials + words + letters + pieces + MARKERS


def make_tiny_backbone(directory, layers: int = 2, hidden: int = 32):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocab()) + "\n")
    tokenizer = BertTokenizerFast(
        vocab=str(vocab_file), do_lower_case=True
    )  # transformers 5: `vocab`
    tokenizer.save_pretrained(str(directory))
    config = BertConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(directory))
    return directory


def synthetic_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence with chemicals (1-2 words) and diseases, learnable from word identity."""
    tokens, tags = [], []
    for _ in range(rng.randint(3, 9)):
        roll = rng.random()
        if roll < 0.18:
            tokens.append(rng.choice(CHEMICALS))
            tags.append("B-Chemical")
            if rng.random() < 0.3:
                tokens.append(rng.choice(CHEMICALS))
                tags.append("I-Chemical")
        elif roll < 0.32:
            tokens.append(rng.choice(DISEASES))
            tags.append("B-Disease")
        elif roll < 0.4:
            tokens.append(rng.choice(PUNCT))
            tags.append("O")
        else:
            tokens.append(rng.choice(FILLER))
            tags.append("O")
    return tokens, tags


def make_tiny_dataset(
    root, name: str = "NCBI-disease", sizes=(160, 40, 40), seed: int = 0, keep_types=None
):
    """Write <root>/bioner/<name>/{train,devel,test}.tsv with synthetic sentences.

    `keep_types` keeps only those entity types annotated (the others become O), as in
    single-type benchmarks such as BC5CDR-chem."""
    rng = random.Random(seed)
    directory = root / "bioner" / name
    directory.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "devel", "test"), sizes, strict=True):
        lines = []
        for _ in range(size):
            tokens, tags = synthetic_sentence(rng)
            if keep_types is not None:
                tags = [t if t == "O" or t[2:] in keep_types else "O" for t in tags]
            lines += [f"{t}\t{g}" for t, g in zip(tokens, tags, strict=True)] + [""]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


RELATION_FILES = {
    "train": "CDR_TrainingSet.PubTator.txt",
    "devel": "CDR_DevelopmentSet.PubTator.txt",
    "test": "CDR_TestSet.PubTator.txt",
}


def synthetic_relation_document(rng: random.Random, pmid: str) -> list[str]:
    """PubTator lines of a document whose CID pairs follow a rule a tiny model can learn:
    a chemical induces a disease when the chemical is `given` and the disease `severe`
    in one sentence; other pairs in the document (also cross-sentence) are negatives."""
    chemicals = rng.sample(range(len(CHEMICALS)), 3)
    diseases = rng.sample(range(len(DISEASES)), 3)
    sentences, mentions, relations = [], [], set()
    offset = len("t") + 1  # the title "t", then a space
    for _ in range(rng.randint(2, 4)):
        c, d = rng.choice(chemicals), rng.choice(diseases)
        induced = rng.random() < 0.4
        words = (
            ["the", "patient", "was", "given", CHEMICALS[c], "and", "had", "severe", DISEASES[d]]
            if induced
            else ["the", "patient", "had", CHEMICALS[c], "with", "a", DISEASES[d]]
        )
        text = " ".join(words) + " ."
        for word, kind, index in ((CHEMICALS[c], "Chemical", c), (DISEASES[d], "Disease", d)):
            start = offset + text.index(word)
            mentions.append(
                f"{pmid}\t{start}\t{start + len(word)}\t{word}\t{kind}\tD{kind[0]}{index}"
            )
        if induced:
            relations.add((f"DC{c}", f"DD{d}"))
        sentences.append(text)
        offset += len(text) + 1
    lines = [f"{pmid}|t|t", f"{pmid}|a|{' '.join(sentences)}", *mentions]
    lines += [f"{pmid}\tCID\t{c}\t{d}" for c, d in sorted(relations)]
    return lines


def make_tiny_relation_corpus(root, sizes=(60, 20, 20), seed: int = 0):
    """<root>/normalization/BC5CDR/CDR_*.PubTator.txt with synthetic CID documents."""
    rng = random.Random(seed)
    directory = root / "normalization" / "BC5CDR"
    directory.mkdir(parents=True, exist_ok=True)
    pmid = 1000
    for split, size in zip(RELATION_FILES, sizes, strict=True):
        blocks = []
        for _ in range(size):
            pmid += 1
            blocks.append("\n".join(synthetic_relation_document(rng, str(pmid))))
        (directory / RELATION_FILES[split]).write_text("\n\n".join(blocks) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_relation_data_root(tmp_path_factory):
    return make_tiny_relation_corpus(tmp_path_factory.mktemp("relation-data"))


def tiny_relation_config(backbone, data_root, output, **changes):
    from openmed_ray.config import RelationTrainConfig

    values = dict(
        backbone=str(backbone),
        data_root=str(data_root),
        output=str(output),
        method="full",
        learning_rate=3e-3,
        head_learning_rate=3e-3,
        batch_size=4,
        epochs=8,
        patience=8,
        warmup_ratio=0.0,
        dropout=0.0,
        max_length=128,
        overlap=32,
        threads_per_worker=1,
    )
    values.update(changes)
    return RelationTrainConfig.from_dict(values)


@pytest.fixture(scope="session")
def tiny_relation_bundle(tiny_backbone, tiny_relation_data_root, tmp_path_factory):
    """A trained tiny CID relation bundle (in-process: fast)."""
    from openmed_ray.train.relations import train_relations_local

    output = tmp_path_factory.mktemp("relation-run")
    config = tiny_relation_config(tiny_backbone, tiny_relation_data_root, output)
    return train_relations_local(config, name="tiny-cid").bundle


@pytest.fixture(scope="session")
def tiny_entity_relation_bundle(tiny_backbone, tiny_relation_data_root, tmp_path_factory):
    """The same, scoring pooled entities instead of mention pairs (the first `cid` design)."""
    from openmed_ray.train.relations import train_relations_local

    output = tmp_path_factory.mktemp("entity-relation-run")
    config = tiny_relation_config(
        tiny_backbone, tiny_relation_data_root, output, pair_scoring="entities"
    )
    return train_relations_local(config, name="tiny-cid-entities").bundle


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


def start_local_ray() -> None:
    from openmed_ray.runtime import ensure_ray

    # Always a fresh local instance, never a cluster some `ray start` left behind.
    ensure_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the whole session (starting Ray costs seconds)."""
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()


MULTITASK_DATASETS = {"BC5CDR-chem": "Chemical", "BC5CDR-disease": "Disease"}


@pytest.fixture(scope="session")
def tiny_multitask_data_root(tmp_path_factory):
    """Two single-type tiny benchmarks over the same kind of text (chemicals; diseases)."""
    root = tmp_path_factory.mktemp("multitask-data")
    for seed, (name, entity_type) in enumerate(MULTITASK_DATASETS.items()):
        make_tiny_dataset(root, name, sizes=(120, 40, 40), seed=seed, keep_types={entity_type})
    return root


def tiny_multitask_config(backbone, data_root, output, **changes):
    from openmed_ray.config import FinetuneConfig

    values = dict(
        datasets=tuple(MULTITASK_DATASETS),
        backbone=str(backbone),
        output=str(output),
        data_root=str(data_root),
        method="full",
        learning_rate=5e-3,
        batch_size=16,
        epochs=6,
        patience=6,
        threads_per_worker=1,
        warmup_ratio=0.0,
    )
    return FinetuneConfig(**{**values, **changes})


@pytest.fixture(scope="session")
def tiny_multitask_bundle(tiny_backbone, tiny_multitask_data_root, tmp_path_factory):
    """A trained tiny multi-type bundle (heads chemical and disease), in-process."""
    from openmed_ray.train.finetune import finetune_local

    config = tiny_multitask_config(
        tiny_backbone, tiny_multitask_data_root, tmp_path_factory.mktemp("multitask-run")
    )
    return finetune_local(config, name="tiny-multi").bundle


@pytest.fixture(scope="session")
def tiny_bundle(tiny_backbone, tiny_data_root, tmp_path_factory):
    """A trained tiny adapter bundle (full fine-tuning in-process: fast and accurate)."""
    from openmed_ray.train.finetune import finetune_local

    config = tiny_finetune_config(
        tiny_backbone, tiny_data_root, tmp_path_factory.mktemp("bundle-run"), epochs=6
    )
    return finetune_local(config, name="tiny").bundle


def tiny_finetune_config(backbone, data_root, output, **changes):
    """Full fine-tuning of the tiny backbone on the tiny NCBI-disease: fast and accurate."""
    from openmed_ray.config import FinetuneConfig

    values = dict(
        dataset="NCBI-disease",
        backbone=str(backbone),
        output=str(output),
        data_root=str(data_root),
        method="full",
        learning_rate=5e-3,
        batch_size=16,
        epochs=3,
        threads_per_worker=1,
        warmup_ratio=0.0,
    )
    return FinetuneConfig(**{**values, **changes})


OWNER_SCRIPT = """
import os, sys
from openmed_ray.config import ClaimConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.claim import acquire_claim
location, run_id, purpose, heartbeat, stale = sys.argv[1:6]
config = ClaimConfig(heartbeat_seconds=float(heartbeat), stale_after_seconds=float(stale))
claim = acquire_claim(location, run_id, purpose=purpose, takeover=False, config=config)
print("held", flush=True)
for line in sys.stdin:  # commands: 'verify' (am I still the owner?), 'die'
    if line.strip() == "die":
        os._exit(0)  # no release: a killed run
    try:
        claim.fence.verify()
        print("owner", flush=True)
    except OpenMedError as exc:
        print(f"lost: {exc}", flush=True)
"""


def start_claim_owner(
    location: str, run_id: str, purpose: str = "annotate", heartbeat=10.0, stale=120.0
):
    """A real process that claims `location` and then obeys 'verify' / 'die' on stdin."""
    import subprocess
    import sys

    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, location, run_id, purpose, str(heartbeat), str(stale)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout.readline().strip() == "held"
    return owner


def claim_by_dead_process(location: str, run_id: str, purpose: str = "annotate") -> None:
    """Leave `location` claimed by a process that died without releasing it."""
    owner = start_claim_owner(location, run_id, purpose)
    owner.communicate("die\n", timeout=60)


class MotoS3:
    """moto's S3 server on 127.0.0.1 at a fixed port, so it can be stopped and started again
    mid-run (an outage): its objects live in this process's memory and survive a restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def s3_server(monkeypatch):
    """A real S3 API on loopback with bucket `corpus`; the AWS variables point at it."""
    server = MotoS3()
    for key, value in {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import urllib.request

    import boto3

    # moto keeps its objects in this process across servers: start every test empty.
    urllib.request.urlopen(urllib.request.Request(f"{server.url}/moto-api/reset", method="POST"))
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="corpus")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real `ray start --head` cluster with the job server for one module (tests/jobs
    shares one per package): an idle head and its dashboard keep taking CPU from later tests."""
    yield from start_ray_head(tmp_path_factory)


def start_ray_head(tmp_path_factory):
    """Start `ray start --head`, yield its dashboard address, stop it.

    `--block` ties the cluster's processes to one process group we own, so tearing it down
    never touches other Ray instances on the machine (unlike `ray stop`).
    """
    import shutil
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    # No drain on SIGTERM: it waits up to 30 s for the node to go idle (for Serve replicas on
    # Kubernetes), and a test head never does while job drivers' detached actors live.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    log_dir = tmp_path_factory.mktemp("ray-head")

    def start(attempt: int):
        dashboard_port = free_port()
        log = (log_dir / f"head-{attempt}.log").open("w")
        process = subprocess.Popen(
            [
                ray_cli,
                "start",
                "--head",
                "--block",
                "--num-cpus=2",
                f"--port={free_port()}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                # Fixed default agent ports (52365, ...) clash with any other Ray instance on
                # the machine, e.g. the session's ray.init(); without its agent the head
                # refuses every job ("No available agent to submit job").
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        address = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.time() + 120
        while True:
            try:
                # The dashboard answers before the job agent; wait for the jobs API itself.
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                urllib.request.urlopen(f"{address}/api/jobs/", timeout=2)
                return process, address
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return None, log.name
                time.sleep(1)

    # Ray gives its dashboard 60 s to come up; on a loaded 2-core machine that can be too
    # short, so a failed start is retried before the tests give up.
    for attempt in range(3):
        process, address = start(attempt)
        if process is not None:
            break
    else:
        raise RuntimeError(f"ray head did not start in 3 attempts; see {address}")
    yield address
    # SIGTERM to `ray start` alone: it stops its processes in order (a few seconds).
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group outlived it
