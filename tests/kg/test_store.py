"""Merge planning against the manifest (pure), and the store's pointer and cleanup."""

import pytest

from openmed_ray.errors import ConfigError, OpenMedError
from openmed_ray.kg.graph import SCHEMAS
from openmed_ray.kg.store import (
    POINTER,
    STATE_DOCUMENT_SCHEMA,
    TABLES,
    ConcurrentRunError,
    GraphSettingsError,
    GraphStore,
    PartitionChangedError,
    plan_merge,
)

SETTINGS = {"levels": ["document"], "dictionary": "abc"}
MANIFEST = {
    "settings": SETTINGS,
    "partitions": {"day1": {"hash": "h1"}, "day2": {"hash": "h2"}},
}


def test_partitions_are_classified():
    plan = plan_merge(MANIFEST, {"day1": "h1", "day3": "h3"}, SETTINGS)
    assert (plan.new, plan.replaced, plan.unchanged, plan.missing) == (
        ["day3"],
        [],
        ["day1"],
        ["day2"],
    )
    first = plan_merge(None, {"day1": "h1", "day2": "h2"}, SETTINGS)
    assert first.work == ["day1", "day2"]


def test_a_changed_partition_needs_replace():
    with pytest.raises(PartitionChangedError, match="--replace day2"):
        plan_merge(MANIFEST, {"day1": "h1", "day2": "changed"}, SETTINGS)
    plan = plan_merge(MANIFEST, {"day1": "h1", "day2": "changed"}, SETTINGS, replace=["day2"])
    assert plan.replaced == ["day2"] and plan.work == ["day2"]


def test_replace_must_name_a_merged_partition_in_the_input():
    with pytest.raises(OpenMedError, match="--replace day9: no merged partition"):
        plan_merge(MANIFEST, {"day1": "h1"}, SETTINGS, replace=["day9"])
    with pytest.raises(OpenMedError, match="--replace day2: .*no longer in the input"):
        plan_merge(MANIFEST, {"day1": "h1"}, SETTINGS, replace=["day2"])


def test_other_settings_need_rebuild_with_every_partition_present():
    other = {**SETTINGS, "dictionary": "def"}
    with pytest.raises(GraphSettingsError, match="dictionary"):
        plan_merge(MANIFEST, {"day1": "h1", "day2": "h2"}, other)
    plan = plan_merge(MANIFEST, {"day1": "h1", "day2": "h2"}, other, rebuild=True)
    assert plan.replaced == ["day1", "day2"]
    with pytest.raises(OpenMedError, match="--rebuild needs every merged partition"):
        plan_merge(MANIFEST, {"day1": "h1"}, other, rebuild=True)


def empty_state():
    return {n: SCHEMAS[n].empty_table() for n in TABLES}


def commit(store, expected, marker):
    manifest = {"partitions": {}, "marker": marker}
    documents = STATE_DOCUMENT_SCHEMA.empty_table()
    return store.commit(empty_state(), documents, manifest, lambda path: None, expected)


def test_commits_switch_the_pointer_and_keep_two_states(tmp_path):
    store = GraphStore(tmp_path)
    assert store.current() is None
    first = commit(store, None, "first")
    assert (tmp_path / POINTER).read_text() == "states/v000001\n"
    second = commit(store, "states/v000001", "second")
    third = commit(store, "states/v000002", "third")
    assert store.current().manifest["marker"] == "third" and third.version == 3
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == ["v000002", "v000003"]
    assert not first.path.exists() and second.path.exists()
    assert (tmp_path / "latest").resolve() == third.path


def test_a_run_that_lost_the_race_commits_nothing(tmp_path):
    store = GraphStore(tmp_path)
    commit(store, None, "first")
    with pytest.raises(ConcurrentRunError, match="another run"):
        commit(store, None, "stale")  # started before "first" was committed
    assert store.current().manifest["marker"] == "first"
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == ["v000001"]


def test_graph_directory_must_be_local():
    with pytest.raises(ConfigError, match="local directory"):
        GraphStore("s3://bucket/graph")
