"""A self-contained HTML review page of annotated documents (the displaCy / Med7 look).

A reproducible sample of documents is drawn from an annotation output, their texts are read
from the input corpus, and every entity is highlighted in its label's colour. The page has a
legend with per-label counts (in the sample and in the whole output) and checkboxes that
filter the highlighting by label; `#labels=A,B` in the URL preselects labels. No network
assets: styles and script are inline.
"""

from __future__ import annotations

import html
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from openmed_ray.errors import OpenMedError
from openmed_ray.io.annotations import DOCUMENTS, ENTITIES, read_parts
from openmed_ray.io.corpus import inspect_corpus
from openmed_ray.io.filesystem import resolve, write_bytes_atomic

# displaCy's palette for the labels users know, then a fixed cycle for the rest.
KNOWN_COLOURS = {
    "DRUG": "#7aecec",
    "STRENGTH": "#ff9561",
    "FORM": "#bfeeb7",
    "ROUTE": "#feca74",
    "DOSAGE": "#aa9cfc",
    "FREQUENCY": "#c887fb",
    "DURATION": "#9cc9cc",
    "CHEMICAL": "#7aecec",
    "DISEASE": "#ff9561",
    "GENE": "#aa9cfc",
    "SPECIES": "#bfeeb7",
}
PALETTE = ["#feca74", "#e4e7d2", "#ddd", "#ffeb80", "#bfe1d9", "#f0d0ff", "#c8e6a0", "#ffd1dc"]


@dataclass
class _Span:
    start: int
    end: int
    label: str
    adapter: str
    score: float


def label_colours(labels: list[str]) -> dict[str, str]:
    colours, spare = {}, iter(PALETTE * (1 + len(labels) // len(PALETTE)))
    for label in sorted(labels):
        colours[label] = KNOWN_COLOURS.get(label.upper()) or next(spare)
    return colours


def sample_documents(output: str, sample: int, seed: int) -> list[str]:
    """Ids of `sample` documents annotated without error, the same for the same seed."""
    documents = read_parts(output, DOCUMENTS, columns=["doc_id", "status"])
    if documents.num_rows == 0:
        raise OpenMedError(f"{output}: no documents/ parts; is this an `annotate` output?")
    ids = sorted(documents.filter(pc.equal(documents["status"], "ok"))["doc_id"].to_pylist())
    return sorted(random.Random(seed).sample(ids, min(sample, len(ids))))


def read_texts(corpus: str, ids: list[str], id_column: str, text_column: str) -> dict[str, str]:
    info = inspect_corpus(corpus, id_column, text_column)
    fs, _ = resolve(corpus)
    dataset = pads.dataset(info.files, filesystem=fs, format="parquet")
    table = dataset.to_table(
        columns=[id_column, text_column],
        filter=pc.field(id_column).cast(pa.string()).isin(ids),
    )
    texts = {}
    for doc_id, text in zip(
        table[id_column].to_pylist(), table[text_column].to_pylist(), strict=True
    ):
        texts[str(doc_id)] = text.decode("utf-8") if isinstance(text, bytes) else text
    missing = sorted(set(ids) - set(texts))
    if missing:
        raise OpenMedError(
            f"{corpus}: {len(missing)} sampled document(s) are not in the corpus (first: "
            f"{missing[0]!r}); pass the --documents the annotation ran on"
        )
    return texts


def _render_text(text: str, spans: list[_Span], colours: dict[str, str]) -> tuple[str, list]:
    """HTML for one document: properly nested spans become nested marks; a span crossing an
    open one is listed apart (returned), so no entity is silently dropped."""
    spans = sorted(spans, key=lambda s: (s.start, -s.end))
    parts, stack, crossing, cursor = [], [], [], 0

    def close_until(position: int) -> None:
        nonlocal cursor
        while stack and stack[-1].end <= position:
            span = stack.pop()
            parts.append(html.escape(text[cursor : span.end]))
            cursor = span.end
            parts.append(f'</span><span class="ent-label">{html.escape(span.label)}</span></mark>')

    for span in spans:
        close_until(span.start)
        if stack and span.end > stack[-1].end:
            crossing.append(span)
            continue
        parts.append(html.escape(text[cursor : span.start]))
        cursor = span.start
        title = f"{span.label} · {span.adapter} · {span.score:.3f} · [{span.start}, {span.end})"
        parts.append(
            f'<mark class="entity" data-label="{html.escape(span.label)}" '
            f'data-adapter="{html.escape(span.adapter)}" data-start="{span.start}" '
            f'data-end="{span.end}" style="background:{colours[span.label]}" '
            f'title="{html.escape(title)}"><span class="ent-text">'
        )
        stack.append(span)
    close_until(len(text))
    parts.append(html.escape(text[cursor:]))
    return "".join(parts), crossing


_STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} .doc{border-top:1px solid #ddd;padding:1em 0;line-height:2.4}
.doc h2{font-size:1em;margin:0;color:#555;line-height:1.4}
mark.entity{padding:0.25em 0.4em;margin:0 0.15em;border-radius:0.35em;line-height:1}
mark.entity .ent-label{font-size:0.6em;font-weight:bold;text-transform:uppercase;
  margin-left:0.4em;vertical-align:middle}
mark.entity.off{background:none!important;padding:0;margin:0}
mark.entity.off .ent-label{display:none}
#legend label{display:inline-block;margin:0 1em 0.4em 0;padding:0.2em 0.5em;border-radius:0.3em}
.crossing{font-size:0.85em;color:#555;line-height:1.4}
.relations{font-size:0.9em;line-height:1.5;margin:0.5em 0 0 0;padding-left:1.2em}
.relations .evidence{color:#444;font-style:italic}
"""

_SCRIPT = """
function apply(){
  const on=new Set([...document.querySelectorAll('#legend input:checked')].map(i=>i.value));
  document.querySelectorAll('mark.entity').forEach(m=>m.classList.toggle('off',!on.has(m.dataset.label)));
}
function fromHash(){
  const m=location.hash.match(/labels=([^&]*)/);
  if(!m) return;
  const want=new Set(decodeURIComponent(m[1]).split(',').filter(Boolean));
  document.querySelectorAll('#legend input').forEach(i=>{i.checked=want.has(i.value);});
}
document.addEventListener('DOMContentLoaded',()=>{
  document.querySelectorAll('#legend input').forEach(i=>i.addEventListener('change',apply));
  fromHash(); apply();
});
window.addEventListener('hashchange',()=>{fromHash(); apply();});
"""


def _relations_by_document(graph: str, ids: list[str]) -> dict[str, list[dict]]:
    """The graph's exported relations of these documents, with their nodes' names."""
    from openmed_ray.kg.store import load_graph, load_relations

    nodes, _ = load_graph(graph)
    name = dict(zip(*nodes.select(["node_id", "name"]).to_pydict().values(), strict=True))
    table = load_relations(graph)
    table = table.filter(pc.is_in(table["doc_id"], value_set=pa.array(ids, pa.string())))
    out: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        row["head_name"] = name.get(row["head"], row["head"])
        row["tail_name"] = name.get(row["tail"], row["tail"])
        out[row["doc_id"]].append(row)
    return out


def _render_relations(text: str, relations: list[dict]) -> str:
    if not relations:
        return ""
    items = "".join(
        f"<li><b>{html.escape(r['head_name'])}</b> {html.escape(r['relation'])} "
        f"<b>{html.escape(r['tail_name'])}</b> ({r['score']:.3f}): "
        f'<span class="evidence">{html.escape(text[r["evidence_start"] : r["evidence_end"]])}'
        "</span></li>"
        for r in sorted(relations, key=lambda r: -r["score"])
    )
    return f'<ul class="relations">{items}</ul>'


def render_review(
    entities_output: str,
    corpus: str,
    html_path: str,
    *,
    sample: int = 50,
    seed: int = 0,
    id_column: str = "doc_id",
    text_column: str = "text",
    relations_graph: str | None = None,
) -> dict[str, object]:
    """Write the review page; returns what it shows (documents, per-label counts).

    `relations_graph`: a graph built with `kg --relations`; each document then lists its
    predicted relations (named by the graph's nodes) with their evidence sentence."""
    if sample < 1:
        raise OpenMedError(f"--sample must be >= 1, got {sample}")
    ids = sample_documents(entities_output, sample, seed)
    texts = read_texts(corpus, ids, id_column, text_column)
    table = read_parts(entities_output, ENTITIES)
    totals = Counter(table["label"].to_pylist())
    chosen = table.filter(pc.is_in(table["doc_id"], value_set=pa.array(ids, pa.string())))
    spans: dict[str, list[_Span]] = defaultdict(list)
    for row in chosen.select(["doc_id", "start", "end", "label", "adapter", "score"]).to_pylist():
        doc_id = row.pop("doc_id")
        spans[doc_id].append(_Span(**row))
    shown = Counter(s.label for doc in spans.values() for s in doc)
    colours = label_colours(list(totals | shown))

    legend = "".join(
        f'<label style="background:{colours[label]}"><input type="checkbox" value="'
        f'{html.escape(label)}" checked> {html.escape(label)} '
        f'<span class="count">{shown[label]}</span> / {totals[label]}</label>'
        for label in sorted(colours)
    )
    related = _relations_by_document(relations_graph, ids) if relations_graph else {}
    documents = []
    for doc_id in ids:
        body, crossing = _render_text(texts[doc_id], spans[doc_id], colours)
        extra_relations = _render_relations(texts[doc_id], related.get(doc_id, []))
        extra = (
            '<div class="crossing">overlapping (not inline): '
            + "; ".join(
                f"{html.escape(texts[doc_id][s.start : s.end])} [{html.escape(s.label)}]"
                for s in crossing
            )
            + "</div>"
            if crossing
            else ""
        )
        documents.append(
            f'<div class="doc" id="doc-{html.escape(doc_id)}"><h2>{html.escape(doc_id)} '
            f'({len(spans[doc_id])} entities)</h2><div class="text">{body}</div>{extra}'
            f"{extra_relations}</div>"
        )
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>openmed-ray review</title>'
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        f"<h1>{len(ids)} documents from {html.escape(entities_output)}</h1>"
        f'<div id="legend">{legend}</div><p>counts: in this sample / in the whole output</p>'
        + "".join(documents)
        + "</body></html>"
    )
    write_bytes_atomic(page.encode("utf-8"), html_path)
    return {
        "html": html_path,
        "documents": len(ids),
        "entities_shown": sum(shown.values()),
        "relations_shown": sum(len(related.get(doc_id, [])) for doc_id in ids),
        "labels": {label: {"sample": shown[label], "total": totals[label]} for label in colours},
    }
