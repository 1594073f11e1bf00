"""The relation classifier: entity pooling, batching, bundles that reload exactly."""

import pytest
import torch

from openmed_ray.models.bundle import BundleError, load_bundle
from openmed_ray.models.relation import (
    DISTANCE_BUCKETS,
    collate,
    load_relation_bundle,
    logsumexp_pool,
    mention_links,
    predict_pairs,
)
from openmed_ray.relations.datasets import relation_dataset
from openmed_ray.relations.encoding import encode_documents


def test_pooling_is_a_log_sum_exp_per_entity():
    values = torch.randn(7, 5)
    groups = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    pooled = logsumexp_pool(values, groups, 3)
    for entity in range(3):
        expected = torch.logsumexp(values[groups == entity], dim=0)
        assert torch.allclose(pooled[entity], expected, atol=1e-6)


@pytest.mark.parametrize("scoring", ["mention-pairs", "entities"])
def test_batched_documents_score_like_documents_alone(scoring, request, tiny_relation_data_root):
    fixture = (
        "tiny_relation_bundle" if scoring == "mention-pairs" else "tiny_entity_relation_bundle"
    )
    bundle = load_relation_bundle(request.getfixturevalue(fixture))
    assert bundle.model.pair_scoring == scoring
    documents = relation_dataset("BC5CDR-CID", tiny_relation_data_root).load("test")[:6]
    max_length, overlap = bundle.window()
    encoded = encode_documents(
        bundle.tokenizer, documents, bundle.task, max_length=max_length, overlap=overlap
    )
    batch = collate(encoded, pad_id=0)
    assert batch.input_ids.shape[0] == sum(len(d.windows) for d in encoded)
    together = predict_pairs(bundle.model, encoded, pad_id=0, batch_size=6, evidence=True)
    for document, prediction in zip(encoded, together, strict=True):
        [alone] = predict_pairs(bundle.model, [document], pad_id=0, evidence=True)
        assert torch.allclose(
            torch.tensor(prediction.probabilities), torch.tensor(alone.probabilities), atol=1e-5
        )
        assert (prediction.best_mentions == alone.best_mentions).all()
        # Evidence mentions belong to the pair's two entities.
        for (h, t), (i, j) in zip(document.pairs, prediction.best_mentions, strict=True):
            assert document.mention_entity[i] == h and document.mention_entity[j] == t


def test_a_pair_scores_the_log_sum_exp_of_its_mention_pairs(
    tiny_relation_bundle, tiny_relation_data_root
):
    bundle = load_relation_bundle(tiny_relation_bundle)
    documents = relation_dataset("BC5CDR-CID", tiny_relation_data_root).load("test")[:4]
    max_length, overlap = bundle.window()
    encoded = encode_documents(
        bundle.tokenizer, documents, bundle.task, max_length=max_length, overlap=overlap
    )
    encoded = [d for d in encoded if d.pairs]
    batch = collate(encoded, pad_id=0)
    with torch.inference_mode():
        mentions, context = bundle.model.encode(batch)
        pair_logits = bundle.model.pair_logits(batch, mentions, context)
        at = mention_at = 0
        for index, document in enumerate(encoded):
            m = len(document.mention_entity)
            links = mention_links(document)
            scores = bundle.model.score_mention_pairs(
                mentions[mention_at : mention_at + m], context, links, index
            )
            margins = scores[:, 1] - scores[:, 0]
            for pair in range(len(document.pairs)):
                mine = margins[torch.tensor(links.pairs) == pair]
                assert torch.allclose(
                    pair_logits[at + pair], torch.stack([torch.tensor(0.0), mine.logsumexp(0)]),
                    atol=1e-5,
                )  # fmt: skip
            # Distances are sentence distances, capped at the last bucket.
            sentence = document.mention_sentence
            for i, j, d in zip(links.heads, links.tails, links.distances, strict=True):
                assert d == min(abs(sentence[i] - sentence[j]), DISTANCE_BUCKETS - 1)
            at += len(document.pairs)
            mention_at += m


def test_relation_and_ner_bundles_refuse_each_other(tiny_relation_bundle, tiny_bundle):
    with pytest.raises(BundleError, match="is a relation bundle .* not an NER adapter"):
        load_bundle(tiny_relation_bundle)
    with pytest.raises(BundleError, match="is not a relation bundle"):
        load_relation_bundle(tiny_bundle)


def test_labels_that_disagree_with_the_card_are_refused(tiny_relation_bundle, tmp_path):
    import json
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_relation_bundle, copy)
    (copy / "labels.json").write_text(json.dumps({"labels": ["none", "TREATS"]}))
    with pytest.raises(BundleError, match=r"labels.json \['none', 'TREATS'\] disagree"):
        load_relation_bundle(copy)


def test_the_catalog_lists_relation_bundles_and_annotate_refuses_them(
    tiny_relation_bundle, tmp_path, monkeypatch
):
    from openmed_ray.models.adapters import identify_adapter
    from openmed_ray.models.catalog import (
        CATALOG_ENV,
        UnknownAdapterError,
        list_adapters,
        register_adapter,
    )

    catalog = tmp_path / "catalog.json"
    register_adapter(catalog, "my-cid", tiny_relation_bundle)
    monkeypatch.setenv(CATALOG_ENV, str(catalog))
    [row] = [r for r in list_adapters() if r["name"] == "my-cid"]
    assert row["task"] == "relation" and row["relations"] == ["CID"]
    assert row["types"] == "Chemical -> Disease (CID)"
    assert row["test_f1"] is not None
    with pytest.raises(UnknownAdapterError, match="'my-cid' is a relation bundle"):
        identify_adapter("my-cid")
