"""DAPT on Ray Train: 2 workers over a Ray Data corpus, resume, merged backbone, bad input."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from openmed_ray.config import CorpusConfig, DaptConfig, FinetuneConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.passages import CorpusError
from openmed_ray.models.backbones import resolve_backbone
from openmed_ray.models.classifier import load_encoder
from openmed_ray.train.corpus import build_corpus
from openmed_ray.train.dapt import dapt
from openmed_ray.train.finetune import finetune_local
from tests.conftest import synthetic_sentence


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, tiny_backbone):
    directory = tmp_path_factory.mktemp("dapt-corpus")
    rng = random.Random(0)
    with open(directory / "docs.jsonl", "w") as handle:
        for i in range(60):
            text = " ".join(" ".join(synthetic_sentence(rng)[0]) + " ." for _ in range(12))
            handle.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    stats = build_corpus(
        CorpusConfig(
            source=str(directory / "docs.jsonl"),
            output=str(directory / "corpus.parquet"),
            backbone=str(tiny_backbone),
            min_wordpieces=10,
            max_wordpieces=64,
            heldout_fraction=0.2,
            exclude_benchmark_pmids=False,
        )
    )
    assert stats["passages"]["heldout"] > 0
    return directory / "corpus.parquet"


def dapt_config(corpus, backbone, output, **overrides) -> DaptConfig:
    values = dict(
        corpus=str(corpus),
        backbone=str(backbone),
        output=str(output),
        learning_rate=1e-2,
        batch_size=8,
        seq_len=64,
        max_steps=4,
        checkpoint_every=2,
        eval_passages=32,
        workers=2,
        cpus_per_worker=0.5,
        threads_per_worker=1,
    )
    values.update(overrides)
    return DaptConfig(**values)


@pytest.mark.slow
def test_two_workers_learn_resume_and_the_merged_backbone_fine_tunes(
    ray_local, tiny_backbone, tiny_corpus, tiny_data_root, tmp_path
):
    output = tmp_path / "dapt"
    first = dapt(dapt_config(tiny_corpus, tiny_backbone, output))
    assert [h["step"] for h in first.summary["history"]] == [2, 4]
    assert first.summary["steps"] == 4
    assert first.summary["head_initialised"]  # the tiny BERT has no MLM head

    # Without --resume an existing run is refused; with it, training continues at step 5.
    with pytest.raises(OpenMedError, match="--resume"):
        dapt(dapt_config(tiny_corpus, tiny_backbone, output, max_steps=8))
    result = dapt(dapt_config(tiny_corpus, tiny_backbone, output, max_steps=8, resume=True))
    summary = json.loads((output / "dapt.json").read_text())
    assert [h["step"] for h in summary["history"]] == [2, 4, 6, 8]
    assert summary["history"][:2] == first.summary["history"]
    assert summary["tokens_seen"] == summary["history"][-1]["tokens_seen"]
    assert summary["tokens_seen"] > first.summary["tokens_seen"] > 0
    # Learning: the training loss falls, and so does held-out perplexity on the same masks.
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    assert summary["perplexity_before"] == first.summary["perplexity_before"]
    assert summary["perplexity_after"] < summary["perplexity_before"]

    # The merged backbone is a normal backbone directory: fine-tuning starts from its weights.
    assert (result.adapter / "adapter_config.json").is_file()
    assert resolve_backbone(str(result.backbone)) == result.backbone.resolve()
    adapted = load_encoder(result.backbone).state_dict()
    original = load_encoder(tiny_backbone).state_dict()
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(adapted[query], original[query])  # LoRA was folded in
    tuned = finetune_local(
        FinetuneConfig(
            dataset="NCBI-disease",
            backbone=str(result.backbone),
            output=str(tmp_path / "ft"),
            data_root=str(tiny_data_root),
            epochs=1,
            batch_size=16,
            threads_per_worker=1,
        )
    )
    assert tuned.card["epochs_trained"] == 1 and "f1" in tuned.card["metrics"]["test"]


def test_bad_corpora_fail_before_training(tiny_backbone, tiny_corpus, tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(CorpusError, match="no rows"):
        dapt(dapt_config(empty, tiny_backbone, tmp_path / "a"))
    with pytest.raises(CorpusError, match="no text column 'body'"):
        dapt(dapt_config(tiny_corpus, tiny_backbone, tmp_path / "b", text_column="body"))
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"text": ["one passage", "two"]}), small)
    with pytest.raises(CorpusError, match="fewer than one global batch of 8"):
        dapt(dapt_config(small, tiny_backbone, tmp_path / "c"))
    with pytest.raises(CorpusError, match="does not exist"):
        dapt(dapt_config(tiny_corpus, tiny_backbone, tmp_path / "d", heldout=str(tmp_path / "x")))
