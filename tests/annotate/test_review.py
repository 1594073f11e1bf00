"""The HTML review page, rendered by a real headless Chromium."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from openmed_ray.annotate.pipeline import annotate_corpus
from openmed_ray.annotate.review import render_review
from openmed_ray.config import AnnotateConfig
from openmed_ray.errors import OpenMedError
from openmed_ray.io.annotations import ENTITIES, read_parts
from tests.annotate.conftest import write_corpus

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def annotated(ray_local, tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    corpus = write_corpus(root / "corpus", n=60, files=1)
    annotate_corpus(
        AnnotateConfig(
            input=str(corpus),
            output=str(root / "out"),
            adapters=(str(tiny_bundle),),
            threads_per_actor=1,
        )
    )
    texts = dict(zip(*(read_column(corpus, c) for c in ("doc_id", "text")), strict=True))
    return root, corpus, root / "out", texts


def read_column(corpus, column):
    return pq.read_table(corpus).column(column).to_pylist()


class Marks(HTMLParser):
    """Collects every <mark class="entity">: its attributes and the text of its ent-text."""

    def __init__(self):
        super().__init__()
        self.marks, self.stack, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if re.match(r"(https?:)?//", attrs.get(key) or ""):
                self.external.append(attrs[key])
        if tag == "mark":
            self.marks.append({**attrs, "text": ""})
            self.stack.append(self.marks[-1])
        elif tag == "span" and attrs.get("class") == "ent-label" and self.stack:
            self.stack[-1]["in_label"] = True

    def handle_endtag(self, tag):
        if tag == "mark":
            self.stack.pop()
        elif tag == "span" and self.stack:
            self.stack[-1].pop("in_label", None)

    def handle_data(self, data):
        for mark in self.stack:
            if not mark.get("in_label"):
                mark["text"] += data


def parse(html_text):
    parser = Marks()
    parser.feed(html_text)
    return parser


def test_page_shows_every_entity_of_the_sample_self_contained(annotated):
    root, corpus, out, texts = annotated
    page = root / "review.html"
    shown = render_review(str(out), str(corpus), str(page), sample=10, seed=1)
    parsed = parse(page.read_text())
    assert not parsed.external  # no network assets
    entities = read_parts(str(out), ENTITIES)
    doc_ids = re.findall(r'<div class="doc" id="doc-([^"]+)"', page.read_text())
    assert len(doc_ids) == shown["documents"] == 10
    sample = entities.filter(pc.is_in(entities["doc_id"], value_set=pa.array(doc_ids)))
    assert len(parsed.marks) == sample.num_rows == shown["entities_shown"] > 0
    for mark in parsed.marks:
        start, end = int(mark["data-start"]), int(mark["data-end"])
        assert any(texts[d][start:end] == mark["text"] for d in doc_ids)
    # The same seed draws the same documents.
    again = render_review(str(out), str(corpus), str(root / "again.html"), sample=10, seed=1)
    assert again == {**shown, "html": str(root / "again.html")}


def chromium(*args, timeout=120):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt install chromium)")
def test_chromium_renders_the_highlights_and_filters_by_label(annotated, tmp_path):
    import matplotlib.image

    root, corpus, out, texts = annotated
    page = root / "chromium.html"
    shown = render_review(str(out), str(corpus), str(page), sample=8, seed=2)
    profile = f"--user-data-dir={tmp_path / 'profile'}"

    dom = chromium(profile, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    marks = parse(dom.stdout).marks
    assert len(marks) == shown["entities_shown"] > 0
    labels = {m["data-label"] for m in marks}
    assert labels == {"Chemical", "Disease"}
    for mark in marks:
        start, end = int(mark["data-start"]), int(mark["data-end"])
        assert any(text[start:end] == mark["text"] for text in texts.values())
        assert "off" not in mark.get("class", "")  # every label on by default

    # The label filter is live script: #labels=Disease switches Chemical highlighting off.
    filtered = chromium(profile, "--dump-dom", page.as_uri() + "#labels=Disease")
    for mark in parse(filtered.stdout).marks:
        assert ("off" in mark["class"].split()) == (mark["data-label"] == "Chemical")

    shot = tmp_path / "review.png"
    taken = chromium(profile, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 0, taken.stderr[-2000:]
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in ("#7aecec", "#ff9561")}
    painted = {tuple(p) for p in pixels.reshape(-1, 3).tolist()} & colours
    assert painted == colours  # both label colours are on screen


def test_bad_requests_fail_clearly(annotated, tmp_path):
    root, corpus, out, _ = annotated
    with pytest.raises(OpenMedError, match="no documents/ parts"):
        render_review(str(tmp_path), str(corpus), str(tmp_path / "x.html"))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"doc_id": ["zzz"], "text": ["x"]}), other)
    with pytest.raises(OpenMedError, match="not in the corpus"):
        render_review(str(out), str(other), str(tmp_path / "x.html"))
