import json

import pytest

from openmed_ray.cli import main
from tests.test_datasets import needs_shared_data


@needs_shared_data
def test_datasets_json_reports_twelve_with_counts(capsys):
    assert main(["datasets", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 12
    available = [i["name"] for i in items if i["available"]]
    assert "BC4CHEMD" not in available and "FSU" not in available
    assert len(available) == 10
    ncbi = next(i for i in items if i["name"] == "NCBI-disease")
    assert ncbi["splits"]["train"] == {"sentences": 5424, "tokens": 135701, "mentions": 5134}
    assert ncbi["entity_types"] == ["Disease"]


def write_tsv(path, sentences):
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in s) + "\n" for s in sentences))
    return path


def test_eval_with_against_prints_table_and_p_value(tmp_path, capsys):
    sentence = [("aspirin", "B-Chemical"), ("causes", "O"), ("gout", "B-Disease")]
    gold = write_tsv(tmp_path / "gold.tsv", [sentence] * 30)
    good = write_tsv(tmp_path / "good.tsv", [sentence] * 30)
    bad = write_tsv(tmp_path / "bad.tsv", [[(t, "O") for t, _ in sentence]] * 30)
    assert main(["eval", str(gold), str(good), "--against", str(bad), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["system"]["f1"] == 1.0
    assert payload["against"]["f1"] == 0.0
    assert payload["significance"]["p_value"] < 0.01
    assert main(["eval", str(gold), str(good)]) == 0
    out = capsys.readouterr().out
    assert "micro avg" in out and "Chemical" in out


def test_eval_names_the_misaligned_line(tmp_path, capsys):
    gold = write_tsv(tmp_path / "gold.tsv", [[("a", "O"), ("b", "O")]])
    pred = write_tsv(tmp_path / "pred.tsv", [[("a", "O"), ("c", "O")]])
    assert main(["eval", str(gold), str(pred)]) == 2
    err = capsys.readouterr().err
    assert f"{pred}:2" in err and "token 'c' where gold has 'b'" in err


def test_unknown_dataset_is_a_clean_error(capsys):
    assert main(["export", "nope", "--output", "x"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["datasets", "eval", "export"])
def test_help_for_each_verb(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0


def test_json_output_stays_parseable_while_ray_warns_on_stdout(ray_local, capsys):
    """Ray's driver prints raylet warnings to `sys.stdout` from a background thread.

    The warning that once broke `kg --json` was "N PYTHON worker processes have been started";
    it reaches the driver through the GCS error channel, published here the way the raylet does.
    """
    import argparse
    import time
    import uuid

    from ray._private.utils import publish_error_to_driver
    from ray._private.worker import global_worker

    from openmed_ray.cli import _print_json, _stdout_for_json_only

    marker = f"WARNING: raylet chatter {uuid.uuid4()}"
    out, err = "", ""
    args = argparse.Namespace(json=True)
    with _stdout_for_json_only(args):
        publish_error_to_driver(
            "worker_pool_large", marker, global_worker.gcs_client, global_worker.current_job_id
        )
        deadline = time.monotonic() + 30
        while marker not in out + err and time.monotonic() < deadline:
            time.sleep(0.2)
            captured = capsys.readouterr()
            out, err = out + captured.out, err + captured.err
        _print_json(args, {"documents": 1})
    captured = capsys.readouterr()
    out, err = out + captured.out, err + captured.err
    assert marker in err
    assert json.loads(out) == {"documents": 1}
