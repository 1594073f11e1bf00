"""`openmed-ray <verb>`: parses arguments and calls the library. No logic lives here."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from openmed_ray.errors import OpenMedError
from openmed_ray.runtime import ensure_ray

Handler = Callable[[argparse.Namespace], int]


def _print_json(args: argparse.Namespace, payload: object) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False), file=args.json_stream)


@contextlib.contextmanager
def _stdout_for_json_only(args: argparse.Namespace) -> Iterator[None]:
    """With --json, stdout carries the JSON document alone, so `| jq` always parses.

    Anything else printed while the verb runs goes to stderr: Ray's driver prints forwarded
    worker output and raylet warnings ("N PYTHON worker processes have been started") to
    whatever `sys.stdout` is at that moment, from a background thread.
    """
    args.json_stream = sys.stdout
    if not getattr(args, "json", False):
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


# ---------------------------------------------------------------- datasets
def _add_datasets(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("datasets", help="list the paper's 12 benchmarks with split counts")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument("--data-root", help="directory holding bioner/ (default ../shared/data)")
    parser.set_defaults(handler=_run_datasets)


def _run_datasets(args: argparse.Namespace) -> int:
    from openmed_ray.datasets import all_datasets, format_datasets_table

    items = [d.to_dict() for d in all_datasets(args.data_root)]
    if args.json:
        _print_json(args, items)
    else:
        print(format_datasets_table(items))
    return 0


# ---------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a benchmark's splits to Parquet")
    parser.add_argument("dataset", help="dataset name, e.g. NCBI-disease")
    parser.add_argument("--output", required=True, help="directory or s3:// URI")
    parser.add_argument("--data-root")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from openmed_ray.datasets import require_dataset
    from openmed_ray.io.parquet import export_dataset

    for uri in export_dataset(require_dataset(args.dataset, args.data_root), args.output):
        print(uri)
    return 0


# ---------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="entity-level P/R/F1 of predicted IOB2 TSV against gold, with significance"
    )
    parser.add_argument("gold", help="gold IOB2 TSV")
    parser.add_argument("pred", help="predicted IOB2 TSV (same tokens as gold)")
    parser.add_argument("--against", help="a second system's TSV: adds a paired AR test")
    parser.add_argument("--shuffles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from openmed_ray.eval.tsv import compare_tsv_files

    comparison = compare_tsv_files(
        args.gold, args.pred, against=args.against, n_shuffles=args.shuffles, seed=args.seed
    )
    if args.json:
        _print_json(args, comparison.to_dict())
    else:
        print(comparison.format())
    return 0


def _comma_list(text: str) -> list[str]:
    """`a, b,c` -> ["a", "b", "c"] (blank items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="Ray cluster to join: an address or auto (default: $RAY_ADDRESS, else a local Ray)",
    )


# ---------------------------------------------------------------- finetune
def _add_finetune(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("finetune", help="LoRA or full fine-tuning on Ray Train")
    parser.add_argument("--config", help="YAML with FinetuneConfig fields; flags override it")
    parser.add_argument("--dataset", help="benchmark name (see `openmed-ray datasets`)")
    parser.add_argument(
        "--datasets",
        help="comma-separated benchmarks trained jointly into one multi-type bundle",
    )
    parser.add_argument("--head-names", help="comma-separated head names, one per dataset")
    parser.add_argument(
        "--sampling",
        choices=["proportional", "temperature", "round-robin"],
        help="which dataset each batch of a multi-type run comes from",
    )
    parser.add_argument("--sampling-temperature", type=float)
    parser.add_argument("--backbone", help="minilm, a Hugging Face id, or a local directory")
    parser.add_argument("--output", help="run directory (bundle in OUTPUT/adapter)")
    parser.add_argument("--name", help="adapter name recorded in the card")
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--lora", dest="method", action="store_const", const="lora")
    method.add_argument("--full", dest="method", action="store_const", const="full")
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--lora-alpha", type=int)
    parser.add_argument("--lora-dropout", type=float)
    parser.add_argument("--lora-targets", help="comma-separated module names, or all-linear")
    parser.add_argument("--lr", dest="learning_rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--max-seconds", type=float, help="training time budget")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--warmup-ratio", type=float)
    parser.add_argument("--decoding", choices=["viterbi", "argmax"])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--gpus-per-worker", type=float)
    parser.add_argument("--cpus-per-worker", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads-per-worker", type=int)
    parser.add_argument("--max-train-sentences", type=int)
    parser.add_argument("--save-dtype", choices=["float32", "float16"])
    parser.add_argument(
        "--init-from", help="NER bundle (name or path) whose weights the run starts from"
    )
    parser.add_argument("--data-root")
    parser.add_argument("--resume", action="store_true", default=None)
    _add_address(parser)
    parser.set_defaults(handler=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from openmed_ray.config import FinetuneConfig, load_with_overrides
    from openmed_ray.train.finetune import finetune

    lora = {
        "rank": args.lora_rank,
        "alpha": args.lora_alpha,
        "dropout": args.lora_dropout,
        "targets": args.lora_targets.split(",") if args.lora_targets else None,
    }
    lists = {k: getattr(args, k).split(",") for k in ("datasets", "head_names") if getattr(args, k)}
    config = load_with_overrides(
        FinetuneConfig, args.config, {**vars(args), **lists}, nested={"lora": lora}
    )
    ensure_ray(args.address)
    result = finetune(config, name=args.name)
    metrics = result.card["metrics"]
    print(
        f"{result.card['dataset']}: dev F1 {metrics['dev']['f1']:.4f}, "
        f"test F1 {metrics['test']['f1']:.4f} ({result.card['method_label']}, "
        f"{result.card['epochs_trained']} epochs, {result.card['train_seconds']} s)"
    )
    print(f"adapter bundle: {result.bundle}")
    return 0


# ---------------------------------------------------------------- train-relations
def _add_train_relations(sub: argparse._SubParsersAction) -> None:
    from openmed_ray.config import PAIR_SCORINGS

    parser = sub.add_parser(
        "train-relations",
        help="train a relation classifier (BC5CDR chemical-induced disease) on Ray Train",
    )
    parser.add_argument("--config", help="YAML with RelationTrainConfig fields; flags override it")
    parser.add_argument("--dataset", help="relation benchmark (default BC5CDR-CID)")
    parser.add_argument("--backbone", help="minilm, a Hugging Face id, or a local directory")
    parser.add_argument("--output", help="run directory (bundle in OUTPUT/adapter)")
    parser.add_argument("--name", help="bundle name recorded in the card (default: the task)")
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--lora", dest="method", action="store_const", const="lora")
    method.add_argument("--full", dest="method", action="store_const", const="full")
    parser.add_argument("--lr", dest="learning_rate", type=float, help="encoder learning rate")
    parser.add_argument("--head-lr", dest="head_learning_rate", type=float)
    parser.add_argument(
        "--pair-scoring",
        choices=PAIR_SCORINGS,
        help="score every mention pair with its sentence distance (default), or pooled entities",
    )
    parser.add_argument("--batch-size", type=int, help="documents per step")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--max-seconds", type=float, help="training time budget")
    parser.add_argument("--max-train-documents", type=int)
    parser.add_argument("--max-length", type=int, help="wordpieces per window (512)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--gpus-per-worker", type=float)
    parser.add_argument("--cpus-per-worker", type=float)
    parser.add_argument("--threads-per-worker", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--save-dtype", choices=["float32", "float16"])
    parser.add_argument(
        "--init-from", help="relation bundle (name or path) whose weights the run starts from"
    )
    parser.add_argument("--data-root")
    parser.add_argument("--resume", action="store_true", default=None)
    _add_address(parser)
    parser.set_defaults(handler=_run_train_relations)


def _run_train_relations(args: argparse.Namespace) -> int:
    from openmed_ray.config import RelationTrainConfig, load_with_overrides
    from openmed_ray.train.relations import train_relations

    config = load_with_overrides(RelationTrainConfig, args.config, vars(args))
    ensure_ray(args.address)
    result = train_relations(config, name=args.name)
    metrics = result.card["metrics"]
    print(
        f"{result.card['dataset']}: dev F1 {metrics['dev']['f1']:.4f}, test F1 "
        f"{metrics['test']['f1']:.4f} at threshold {result.card['threshold']:.3f} "
        f"({result.card['method_label']}, {result.card['epochs_trained']} epochs, "
        f"{result.card['train_seconds']} s)"
    )
    print(f"relation bundle: {result.bundle}")
    return 0


# ---------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="evaluate an adapter bundle on a benchmark split")
    parser.add_argument("--adapter", required=True, help="adapter name or bundle/run directory")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test", choices=["train", "devel", "test"])
    parser.add_argument("--decoding", choices=["viterbi", "argmax"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--data-root")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from openmed_ray.train.evaluate import evaluate_adapter

    report = evaluate_adapter(
        args.adapter,
        args.dataset,
        args.split,
        decoding=args.decoding,
        data_root=args.data_root,
        precision=args.precision,
        runtime=args.runtime,
    )
    if args.json:
        _print_json(args, report.to_dict())
    else:
        print(report.format_table())
    return 0


# ---------------------------------------------------------------- check-precision
def _add_check_precision(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check-precision",
        help="measure an adapter's test F1 in fp32, int8 and bf16 and record it in its card "
        "(what --precision auto reads)",
    )
    parser.add_argument("adapter", help="adapter name or bundle directory")
    parser.add_argument("--split", default="test", choices=["devel", "test"])
    parser.add_argument("--data-root")
    parser.set_defaults(handler=_run_check_precision)


def _run_check_precision(args: argparse.Namespace) -> int:
    from openmed_ray.models.precision import (
        MEASURED_PRECISIONS,
        choose_precision,
        record_precision_check,
    )

    check = record_precision_check(args.adapter, args.data_root, args.split)
    for head, result in check["heads"].items():
        reduced = ", ".join(
            f"{p} F1 {result[f'{p}_f1']:.4f} ({result[f'{p}_delta_pp']:+.2f} pp)"
            for p in MEASURED_PRECISIONS
        )
        print(
            f"{head} ({result['dataset']} {check['split']}): fp32 F1 {result['fp32_f1']:.4f}, "
            f"{reduced}"
        )
    for units in (False, True):
        choice = choose_precision({"precision_check": check}, cpu_bf16=units)
        where = "a CPU with AMX" if units else "a CPU without AMX"
        print(f"--precision auto on {where}: {choice.precision} ({choice.reason})")
    return 0


# ---------------------------------------------------------------- adapters
def _add_adapters(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("adapters", help="list the adapter catalog with test F1")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run_adapters)


def _run_adapters(args: argparse.Namespace) -> int:
    from openmed_ray.models.catalog import list_adapters

    rows = list_adapters()
    if args.json:
        _print_json(args, rows)
        return 0
    print(f"{'name':<14} {'dataset':<15} {'test F1':>8} {'method':<22} {'version':<17} types")
    for row in rows:
        f1 = f"{row['test_f1']:.4f}" if row["test_f1"] is not None else "-"
        print(
            f"{row['name']:<14} {row['dataset'] or '-':<15} {f1:>8} {row['method'] or '-':<22} "
            f"{row['version'] or '-':<17} {row['types']}"
        )
    return 0


# ---------------------------------------------------------------- annotate
def _add_annotate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "annotate", help="annotate a Parquet corpus (local or s3://) on Ray Data"
    )
    parser.add_argument("--config", help="YAML with AnnotateConfig fields; flags override it")
    parser.add_argument("--input", help="Parquet file, directory or s3:// URI")
    parser.add_argument("--output", help="directory or s3:// URI")
    parser.add_argument("--adapters", help="comma-separated names or paths (default: all-types)")
    parser.add_argument("--id-column")
    parser.add_argument("--text-column")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass")
    parser.add_argument("--docs-per-batch", type=int, help="documents per Ray Data batch")
    parser.add_argument("--rows-per-file", type=int, help="documents per output file pair")
    parser.add_argument("--actors", help="MIN:MAX actor pool size, or N")
    parser.add_argument("--cpus-per-actor", type=float)
    parser.add_argument("--gpus-per-actor", type=float)
    parser.add_argument("--threads-per-actor", type=int)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--aggregation", choices=["simple", "first", "max", "average"])
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "int8"],
        help="inference precision (default auto: int8 on CPU where the card's measured F1 loss "
        "is within 0.3 pp, bf16 on GPU, else fp32; the choice is in summary.json)",
    )
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        help="torch (default) or onnx: ONNX Runtime, fp32 or int8 (pip install 'openmed-ray[onnx]')",
    )
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        help="torch.compile the fp32/bf16 models: same entities, faster after a one-time "
        "compile per actor (default auto: when each actor gets enough documents to pay it back)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        help="forward passes in flight per actor on a CPU, sharing its threads (default auto: "
        "2 where an actor has 2 or more threads; the choice is in summary.json)",
    )
    parser.add_argument("--resume", action="store_true", default=None)
    _add_address(parser)
    parser.set_defaults(handler=_run_annotate)


def _run_annotate(args: argparse.Namespace) -> int:
    from openmed_ray.annotate.pipeline import annotate_corpus, format_summary
    from openmed_ray.config import AnnotateConfig, load_with_overrides, parse_actor_range

    overrides = dict(vars(args))
    if args.adapters:
        overrides["adapters"] = _comma_list(args.adapters)
    if args.actors:
        overrides["min_actors"], overrides["max_actors"] = parse_actor_range(args.actors)
    config = load_with_overrides(AnnotateConfig, args.config, overrides)
    # Ray starts only once the output is claimed: a refused run costs no cluster time.
    summary = annotate_corpus(config, address=args.address)
    print(format_summary(summary))
    return 0


# ---------------------------------------------------------------- tune and select
def _add_tune(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tune", help="HPO sweep: Ray Tune + OptunaSearch (TPE) + ASHA")
    parser.add_argument("--config", help="YAML with SweepConfig fields; flags override it")
    parser.add_argument("--dataset")
    parser.add_argument("--backbone", help="minilm, a Hugging Face id, or a local directory")
    parser.add_argument("--output", help="report, and final/ with the final adapter")
    parser.add_argument("--storage", help="Tune state, local or s3:// (default: OUTPUT/tune)")
    parser.add_argument(
        "--ledger",
        help="finished trials as JSON, local or s3:// (default: OUTPUT/trials.json); a sweep "
        "whose Tune state is gone continues from it with --resume",
    )
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--lora", dest="method", action="store_const", const="lora")
    method.add_argument("--full", dest="method", action="store_const", const="full")
    parser.add_argument("--lora-targets", help="comma-separated module names, or all-linear")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--concurrency", type=int, help="trials running at once")
    parser.add_argument("--cpus-per-trial", type=float)
    parser.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU")
    parser.add_argument("--max-epochs", type=int, help="per trial; ASHA's horizon")
    parser.add_argument("--max-train-sentences", type=int, help="per trial")
    parser.add_argument(
        "--final-epochs", type=int, help="of the final training (default: --max-epochs)"
    )
    parser.add_argument(
        "--final-train-sentences",
        type=int,
        help="cap of the final training (default: the full training set)",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-root")
    parser.add_argument("--resume", action="store_true", default=None)
    _add_address(parser)
    parser.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace) -> int:
    from openmed_ray.config import SweepConfig, load_with_overrides
    from openmed_ray.hpo.sweep import run_sweep

    base = SweepConfig.from_yaml(args.config).finetune.to_dict() if args.config else {}
    shared = {
        "dataset": args.dataset,
        "backbone": args.backbone,
        "method": args.method,
        "epochs": args.max_epochs,
        "max_train_sentences": args.max_train_sentences,
        "data_root": args.data_root,
    }
    finetune = {**base, **{k: v for k, v in shared.items() if v is not None}}
    if args.lora_targets:
        finetune["lora"] = {**base.get("lora", {}), "targets": args.lora_targets.split(",")}
    overrides = {**vars(args), "finetune": finetune}
    config = load_with_overrides(SweepConfig, args.config, overrides)
    ensure_ray(args.address)
    summary = run_sweep(config)
    final = summary["final"]
    print(
        f"{summary['dataset']}: {len(summary['trials'])} trials, best dev F1 "
        f"{summary['best']['dev_f1']:.4f}; final test F1 {final['test']['f1']:.4f} "
        f"(bundle {final['bundle']})"
    )
    return 0


def _add_select(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "select", help="register the best adapter per dataset (by dev F1) across sweeps"
    )
    parser.add_argument("--sweeps", nargs="+", required=True, help="sweep output directories")
    parser.add_argument("--output", required=True, help="catalog JSON to create or update")
    parser.add_argument("--json", action="store_true", help="print the selection as JSON")
    parser.set_defaults(handler=_run_select)


def _run_select(args: argparse.Namespace) -> int:
    from openmed_ray.hpo.select import select_adapters

    rows = select_adapters(args.sweeps, args.output)
    if args.json:
        _print_json(args, rows)
        return 0
    for row in rows:
        chosen = row["chosen"]
        print(
            f"{row['name']}: {row['dataset']} <- {chosen['backbone']} ({chosen['method']}), "
            f"dev F1 {chosen['dev_f1']:.4f} of {len(row['candidates'])} candidate(s)"
        )
    print(f"catalog: {args.output} (use it with OPENMED_RAY_CATALOG={args.output})")
    return 0


# ---------------------------------------------------------------- kg
def _add_kg(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "kg",
        help="link entities to ontology IDs and merge new partitions into a co-occurrence graph",
    )
    parser.add_argument("--config", help="YAML with KGConfig fields; flags override it")
    parser.add_argument("--entities", help="annotate output(s): partitions are its children")
    parser.add_argument("--documents", help="Parquet corpus with the texts (local or s3://)")
    parser.add_argument("--graph", help="local graph directory (versioned states, exports)")
    parser.add_argument("--id-column")
    parser.add_argument("--text-column")
    parser.add_argument("--level", choices=["sentence", "document", "both"], help="default both")
    parser.add_argument("--min-count", type=int, help="exports keep edges seen this often")
    parser.add_argument("--min-score", type=float, help="ignore entities scored lower")
    parser.add_argument("--type-pairs", help="e.g. Chemical-Disease,Gene-Disease (default: any)")
    parser.add_argument(
        "--relations",
        help="relation bundle (name or path, e.g. cid) scoring every candidate pair on Ray Data",
    )
    parser.add_argument(
        "--relation-threads", type=int, help="torch threads per actor (default: its CPUs)"
    )
    parser.add_argument(
        "--min-relation-score",
        type=float,
        help="exports keep scored pairs at least this likely (default: the bundle's threshold)",
    )
    _add_linker_flags(parser)
    parser.add_argument("--examples", type=int, help="example doc_ids kept per edge")
    parser.add_argument(
        "--replace", action="append", help="merged partition to substitute (repeatable)"
    )
    parser.add_argument(
        "--rebuild", action="store_true", default=None, help="re-derive every merged partition"
    )
    parser.add_argument("--actors", type=int)
    parser.add_argument("--cpus-per-actor", type=float)
    parser.add_argument("--docs-per-batch", type=int)
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    _add_address(parser)
    parser.set_defaults(handler=_run_kg)


def _add_linker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dictionary", action="append", help="extra TSV: string<TAB>id<TAB>type (repeatable)"
    )
    parser.add_argument(
        "--no-builtin-dictionary",
        dest="builtin",
        action="store_false",
        default=None,
        help="link with --dictionary files only",
    )
    parser.add_argument("--threshold", type=float, help="TF-IDF similarity to link (0.7)")
    parser.add_argument("--data-root", help="holds normalization/ (the built-in dictionary)")


def _linker_overrides(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    return {
        "dictionaries": args.dictionary,
        "threshold": args.threshold,
        "builtin": args.builtin,
        "data_root": args.data_root,
        **more,
    }


def _run_kg(args: argparse.Namespace) -> int:
    from openmed_ray.config import KG_LEVELS, KGConfig, load_with_overrides
    from openmed_ray.kg.pipeline import build_graph, format_summary

    overrides = dict(vars(args))
    if args.level:
        overrides["levels"] = list(KG_LEVELS) if args.level == "both" else [args.level]
    if args.type_pairs:
        overrides["type_pairs"] = _comma_list(args.type_pairs)
    linker = _linker_overrides(args)
    config = load_with_overrides(KGConfig, args.config, overrides, nested={"linker": linker})
    summary = build_graph(config, address=args.address)
    if args.json:
        _print_json(args, summary)
    else:
        print(format_summary(summary))
    return 0


def _add_calibrate_relations(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate-relations",
        help="choose a relation bundle's graph threshold on dev documents, end to end",
    )
    parser.add_argument(
        "--config", help="YAML with RelationCalibrationConfig fields; flags override it"
    )
    parser.add_argument("--bundle", help="relation bundle (name or path); its card is updated")
    parser.add_argument("--gold", help="PubTator file: dev documents with gold relations")
    parser.add_argument("--work", help="new directory for the texts, annotations and graph")
    parser.add_argument(
        "--adapters", help="NER adapters finding the mentions (default chemical,disease)"
    )
    parser.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "int8"], help="NER precision (auto)"
    )
    parser.add_argument("--actors", type=int, dest="max_actors", help="annotation actors")
    parser.add_argument("--threads-per-actor", type=int)
    parser.add_argument("--relation-threads", type=int)
    parser.add_argument(
        "--linker-splits",
        help="splits of the built-in dictionary (default train: dev text links as unseen)",
    )
    _add_linker_flags(parser)
    parser.add_argument(
        "--no-write-card",
        dest="write_card",
        action="store_false",
        default=None,
        help="report the threshold without changing the bundle's card",
    )
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    _add_address(parser)
    parser.set_defaults(handler=_run_calibrate_relations)


def _run_calibrate_relations(args: argparse.Namespace) -> int:
    from openmed_ray.config import RelationCalibrationConfig, load_with_overrides
    from openmed_ray.kg.calibrate import calibrate_relations

    overrides = dict(vars(args))
    if args.adapters:
        overrides["adapters"] = _comma_list(args.adapters)
    splits = args.linker_splits and _comma_list(args.linker_splits)
    linker = _linker_overrides(args, builtin_splits=splits or None)
    config = load_with_overrides(
        RelationCalibrationConfig, args.config, overrides, nested={"linker": linker}
    )
    record = calibrate_relations(config, address=args.address)
    if args.json:
        _print_json(args, record)
        return 0
    dev = record["dev"]
    print(
        f"threshold {record['threshold']}: dev F1 {dev['f1']:.4f} (P {dev['precision']:.4f}, "
        f"R {dev['recall']:.4f}) over {record['scored_pairs']} scored pairs of linked entities"
        + (f"; written to {config.bundle}'s card" if config.write_card else "")
    )
    return 0


# ---------------------------------------------------------------- corpus and dapt
def _add_corpus(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "corpus", help="JSONL(.gz) corpora to Parquet passages for DAPT (with a held-out split)"
    )
    parser.add_argument("--config", help="YAML with CorpusConfig fields; flags override it")
    parser.add_argument("--from", dest="source", help="a JSONL(.gz) file or a directory of them")
    parser.add_argument("--output", help="training passages (.parquet)")
    parser.add_argument("--heldout", help="held-out passages (default: <stem>.heldout.parquet)")
    parser.add_argument("--backbone", help="whose tokenizer counts wordpieces (default minilm)")
    parser.add_argument("--license-filter", help="keep only these licences, e.g. cc0,cc-by")
    parser.add_argument("--max-docs", type=int, help="documents kept at most, after the filters")
    parser.add_argument("--min-wordpieces", type=int)
    parser.add_argument("--max-wordpieces", type=int)
    parser.add_argument("--heldout-fraction", type=float, help="share of documents (0.02)")
    parser.add_argument(
        "--no-leakage-filter",
        dest="exclude_benchmark_pmids",
        action="store_false",
        default=None,
        help="keep documents whose PMID is in a benchmark's dev or test set",
    )
    parser.add_argument("--data-root", help="holds normalization/ and bioner/ (leakage filter)")
    parser.add_argument("--seed", type=int)
    parser.set_defaults(handler=_run_corpus)


def _run_corpus(args: argparse.Namespace) -> int:
    from openmed_ray.config import CorpusConfig, load_with_overrides
    from openmed_ray.train.corpus import build_corpus

    overrides = dict(vars(args))
    if args.license_filter:
        overrides["license_filter"] = [x.strip() for x in args.license_filter.split(",")]
    stats = build_corpus(load_with_overrides(CorpusConfig, args.config, overrides))
    docs = stats["documents"]
    print(
        f"{docs['read']} documents read, {docs['dropped_license']} dropped by licence, "
        f"{docs['dropped_leakage']} by benchmark leakage; {stats['passages']['train']} training "
        f"passages ({stats['tokens']['train']} wordpieces) in {stats['output']}, "
        f"{stats['passages']['heldout']} held-out in {stats['heldout']}"
    )
    return 0


def _add_dapt(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dapt", help="LoRA masked-LM domain-adaptive pre-training (Ray Train)")
    parser.add_argument("--config", help="YAML with DaptConfig fields; flags override it")
    parser.add_argument("--corpus", help="Parquet passages (file, directory or s3://)")
    parser.add_argument("--heldout", help="held-out passages (default: from `corpus`)")
    parser.add_argument("--backbone", help="minilm, a Hugging Face id, or a local directory")
    parser.add_argument("--output", help="run directory (merged backbone in OUTPUT/backbone)")
    parser.add_argument("--text-column")
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--lora-alpha", type=int)
    parser.add_argument("--lora-dropout", type=float)
    parser.add_argument("--lora-targets", help="comma-separated module names, or all-linear")
    parser.add_argument("--lr", dest="learning_rate", type=float)
    parser.add_argument("--batch-size", type=int, help="global sequences per micro-step")
    parser.add_argument("--grad-accum", type=int, help="micro-steps per optimizer step")
    parser.add_argument("--max-steps", type=int, help="optimizer steps")
    parser.add_argument("--warmup-steps", type=int, help="capped at 10%% of --max-steps")
    parser.add_argument("--seq-len", type=int, help="wordpieces per sequence (256)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--eval-passages", type=int, help="held-out passages for perplexity")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cpus-per-worker", type=float)
    parser.add_argument("--gpus-per-worker", type=float)
    parser.add_argument("--threads-per-worker", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true", default=None)
    _add_address(parser)
    parser.set_defaults(handler=_run_dapt)


def _run_dapt(args: argparse.Namespace) -> int:
    from openmed_ray.config import DaptConfig, load_with_overrides
    from openmed_ray.train.dapt import dapt

    lora = {
        "rank": args.lora_rank,
        "alpha": args.lora_alpha,
        "dropout": args.lora_dropout,
        "targets": args.lora_targets.split(",") if args.lora_targets else None,
    }
    config = load_with_overrides(DaptConfig, args.config, vars(args), nested={"lora": lora})
    ensure_ray(args.address)
    summary = dapt(config).summary
    print(
        f"DAPT: {summary['steps']} steps, {summary['tokens_seen']} tokens "
        f"({summary['tokens_per_second']:.0f} tokens/s); held-out perplexity "
        f"{summary['perplexity_before']} -> {summary['perplexity_after']}"
    )
    print(f"adapter: {summary['adapter']}")
    print(f"fine-tune from it with: --backbone {summary['merged_backbone']}")
    return 0


# ---------------------------------------------------------------- render
def _add_render(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help="a self-contained HTML review page of annotations")
    parser.add_argument("--entities", required=True, help="an `annotate` output directory")
    parser.add_argument("--documents", required=True, help="the input corpus it annotated")
    parser.add_argument("--html", required=True, help="the page to write")
    parser.add_argument("--sample", type=int, default=50, help="documents shown (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--id-column", default="doc_id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument(
        "--relations", help="a graph built with `kg --relations`: list each document's relations"
    )
    parser.set_defaults(handler=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    from openmed_ray.annotate.review import render_review

    shown = render_review(
        args.entities,
        args.documents,
        args.html,
        sample=args.sample,
        seed=args.seed,
        id_column=args.id_column,
        text_column=args.text_column,
        relations_graph=args.relations,
    )
    counts = ", ".join(f"{k} {v['sample']}" for k, v in sorted(shown["labels"].items()))
    print(
        f"{args.html}: {shown['documents']} documents, {shown['entities_shown']} entities ({counts})"
        + (f", {shown['relations_shown']} relations" if args.relations else "")
    )
    return 0


VERBS = (
    _add_datasets,
    _add_export,
    _add_eval,
    _add_finetune,
    _add_train_relations,
    _add_evaluate,
    _add_check_precision,
    _add_adapters,
    _add_annotate,
    _add_render,
    _add_tune,
    _add_select,
    _add_kg,
    _add_calibrate_relations,
    _add_corpus,
    _add_dapt,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openmed-ray", description="Biomedical NER at scale on Ray (OpenMed recipe)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        with _stdout_for_json_only(args):
            return args.handler(args)
    except OpenMedError as exc:
        print(f"openmed-ray {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"openmed-ray {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
