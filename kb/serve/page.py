"""kb — the search page.  kb page --index DIR, or streamlit run app.py -- --index DIR (KB_INDEX=DIR)

Presentation only: searching, views and citations come from kb.search and kb.present.
Every piece of text that comes from a document, a file name or an error goes through
kb.present.render.text_html (inert as HTML *and* as markdown) before it reaches the page, and
errors lose their server paths (kb.serve.access.redact_paths). Who may use the page and which
folders it may index are decided by kb.serve.access.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import streamlit as st

from kb.errors import KBError
from kb.index import update_index
from kb.present.cite import export
from kb.present.render import FIELD_LABELS, document_html, highlight_html, meta_line, text_html
from kb.records import SEARCH_MODES
from kb.search.filters import FilterError, Filters, document_fields, shown_value
from kb.search.live import LiveSearcher
from kb.search.searcher import MAX_QUERY_CHARS, Searcher, bound_query, search_response
from kb.serve.access import (
    authorize_session,
    check_exposure,
    confine,
    is_local_host,
    library_roots,
    redact_paths,
    token_matches,
)
from kb.serve.keys import (
    ACCESS_TOKEN,
    ANYONE,
    KeyStore,
    Library,
    Principal,
    audit_write,
    kb_home,
    load_libraries,
    parse_library_option,
)
from kb.serve.streamlit_server import harden
from kb.serve.uploads import (
    UPLOAD_LIMIT_MB,
    UPLOAD_SUFFIXES,
    document_folder,
    remove_document,
    save_library_file,
    save_upload,
)
from kb.text.vocabulary import parse_synonyms, parse_words

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "corpus"  # in a checkout of kb
UPLOAD_TOTAL_MB = 100  # per upload
UPLOAD_MAX_FILES = 50
WEAK_SHOWN = 3  # hits shown, marked, when nothing matches well
MODE_LABELS = {"hybrid": "混合", "dense": "语义", "lexical": "关键词"}
MODES = {MODE_LABELS[m]: m for m in SEARCH_MODES}
CITE_STYLES = {"简短（含章节）": "short", "GB/T 7714-2015": "gbt7714", "APA 第7版": "apa"}
CITE_LABELS = list(CITE_STYLES)
STAGES = {"reading": "读取文档", "ocr": "识别扫描页", "embedding": "生成向量"}

CSS = """
<style>
html, body, [class*="css"], .stMarkdown, .stTextInput input {
  font-family: "PingFang SC", "Hiragino Sans GB", "Noto Sans CJK SC", "Source Han Sans SC",
               "WenQuanYi Zen Hei", "Microsoft YaHei", system-ui, sans-serif;
}
.block-container { max-width: 60rem; padding-top: 2.2rem; }
.kb-card { border: 1px solid #e3e6eb; border-radius: 10px; padding: 14px 18px 10px; margin: 10px 0 4px;
           background: #ffffff; box-shadow: 0 1px 2px rgba(15, 23, 42, 0.04); }
.kb-crumb { color: #5b6472; font-size: 0.86rem; line-height: 1.6; margin-bottom: 6px; }
.kb-crumb .kb-doc { color: #1d2b3a; font-weight: 600; }
.kb-crumb .kb-sep { color: #a3acb9; margin: 0 0.35em; }
.kb-text { font-size: 1.02rem; line-height: 1.9; letter-spacing: 0.02em; color: #1f2328; text-align: justify;
           max-width: 46em; white-space: pre-wrap; }
.kb-text mark.kb-term { background: #ffeb8a; color: inherit; padding: 0 1px; border-radius: 2px; }
.kb-text .kb-best { background: #eaf2fd; border-radius: 2px; }
.kb-meta { color: #6b7480; font-size: 0.82rem; margin-top: 8px; line-height: 1.7; }
.kb-score { display: inline-block; background: #1f6feb; color: #fff; border-radius: 10px; padding: 0 9px;
            font-weight: 600; cursor: help; }
.kb-summary { color: #6b7480; font-size: 0.85rem; margin: 0.2rem 0 0.4rem; }
.kb-facets { color: #4a5260; font-size: 0.8rem; margin: 0.1rem 0 0.4rem; line-height: 1.6; }
.kb-rank { color: #9aa3ad; font-weight: 600; margin-right: 0.4em; }
.kb-context { color: #5f6875; font-size: 0.95rem; line-height: 1.85; border-left: 3px solid #e3e6eb;
              padding: 2px 0 2px 12px; margin: 8px 0; white-space: pre-wrap; }
.kb-focus { background: #fff4c2; border-left: 4px solid #f5b400; padding: 8px 12px; border-radius: 4px;
            display: block; white-space: pre-wrap; }
.kb-doc-meta { color: #4b5563; font-size: 0.92rem; line-height: 1.8; }
.kb-fulltext { font-size: 1rem; line-height: 1.95; letter-spacing: 0.02em; max-width: 46em; color: #1f2328; }
.kb-fulltext p { margin: 0 0 0.7em; text-align: justify; }
.kb-fulltext p.kb-heading { font-weight: 600; margin-top: 1.1em; }
.kb-fulltext mark.kb-focus-inline { background: #fff1a8; padding: 2px 0; }
[data-testid="stCode"] pre, [data-testid="stCode"] code { font-size: 0.78rem !important; line-height: 1.6 !important;
  font-family: "Noto Sans CJK SC", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei", monospace !important; }
[data-testid="stCode"] { margin-top: -0.4rem; }
.kb-loc, .kb-ocr { display: inline-block; margin-left: 8px; border-radius: 10px; padding: 0 8px; font-size: 0.8rem;
  background: #eef2ff; color: #3730a3; }
.kb-ocr { background: #fef3c7; color: #92400e; }
.kb-weak { display: inline-block; background: #f3f4f6; color: #6b7280; border-radius: 10px; padding: 0 8px;
           margin-left: 6px; font-size: 0.8rem; }
.kb-title { font-size: 1.7rem; font-weight: 600; line-height: 1.4; margin: 0.6rem 0 0.4rem; color: #1f2328; }
/* Streamlit's uploader texts are English and not configurable: replace them. */
[data-testid="stFileUploaderDropzoneInstructions"] > div > span { display: none; }
[data-testid="stFileUploaderDropzoneInstructions"] > div::before { content: "把文件拖到这里，每个不超过 20 MB";
  font-size: 0.85rem; }
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p { font-size: 0; }
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p::after { content: "选择文件";
  font-size: 0.9rem; }
</style>
"""


# --------------------------------------------------------------------------- loading


def _page_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--index")
    parser.add_argument("--store")
    parser.add_argument("--library", action="append", default=[])
    return parser.parse_known_args(sys.argv[1:])[0]


def index_dir_from_args() -> str | None:
    """The index given (--index, --store, KB_INDEX, KB_STORE): a folder, or a Milvus store (a .db path
    or a URI); None when none is."""
    args = _page_args()
    return args.store or os.environ.get("KB_STORE") or args.index or os.environ.get("KB_INDEX") or None


def libraries_from_args() -> dict[str, Library]:
    """The libraries given as ``--library NAME=INDEX`` (``kb page --library``)."""
    return {lib.name: lib for lib in map(parse_library_option, _page_args().library)}


def say(kind: str, message: str, where=st) -> None:
    """An alert whose text is shown as text: markup and server paths removed."""
    getattr(where, kind)(text_html(redact_paths(message)))


def note(kind: str, message: str) -> None:
    """A message that outlives the rerun that follows an action, until dismissed."""
    st.session_state.setdefault("notices", []).append((kind, message))


def show_notices(where) -> None:
    notices = st.session_state.get("notices") or []
    for kind, message in notices:
        say(kind, message, where)
    if notices and where.button("知道了", key="dismiss_notices", help="关闭这些消息"):
        st.session_state["notices"] = []
        st.rerun()


def _remember_authorized() -> None:
    """Tell Streamlit's own routes (uploads) that this session's visitor gave the token."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        authorize_session(ctx.session_id)


def access_granted() -> Principal | None:
    """The page's door: served beyond this machine only with a key — ``KB_ACCESS_TOKEN`` (every
    library, admin) or a scoped key of ``kb tokens`` — which each visitor types once per session
    (compared in constant time). Returns who is in (on this machine without a token: everyone, as
    admin of every library), else None."""
    keys = KeyStore(kb_home())
    try:
        has_keys = bool(keys.keys())
        address = st.get_option("server.address")
        token = check_exposure(address, has_keys=has_keys)
    except KBError as e:
        st.title("kb 知识库检索")
        st.error("这个页面在网络上公开，但没有设置访问口令，所以不提供服务。管理员请设置环境变量 "
                 "KB_ACCESS_TOKEN（或用 kb tokens add 建立密钥）后重新启动，或者只在本机（127.0.0.1）上运行。")
        st.caption(text_html(redact_paths(str(e))))
        return None
    if token is None and is_local_host(address):
        return ANYONE  # on this machine without a token: every library, as admin
    if st.session_state.get("kb_key") is not None:
        _remember_authorized()
        return st.session_state["kb_key"]
    st.title("kb 知识库检索")
    with st.form("login"):
        given = st.text_input("访问口令", type="password", max_chars=256)
        if st.form_submit_button("进入", type="primary"):
            who = ACCESS_TOKEN if token is not None and token_matches(given, token) else keys.verify(given.strip())
            if who is not None:
                st.session_state["kb_key"] = who
                _remember_authorized()
                st.rerun()
            st.error("口令不对。")
    return None


def choose_library(who: Principal) -> Library | None:
    """The library this page shows. With ``--library NAME=INDEX`` options, or libraries in
    ``KB_HOME`` (and no --index), the visitor picks among those the key opens; else the one index
    given."""
    explicit = index_dir_from_args()
    known = load_libraries(kb_home())
    libraries = libraries_from_args() or ({} if explicit else known)
    if not libraries:
        index = explicit or "index"
        name = next((n for n, lib in known.items() if lib.index == index), "default")
        if not who.opens(name):
            st.error("这个密钥不能打开这个知识库。")
            return None
        return known[name] if name in known else Library(name, index)
    mine = [n for n in libraries if who.opens(n)]
    if not mine:
        st.error("这个密钥不能打开任何知识库。")
        return None
    name = st.sidebar.selectbox("知识库", mine, key="library") if len(mine) > 1 else mine[0]
    return libraries[name]


@st.cache_resource(show_spinner=False)
def live_searcher(index_dir: str) -> LiveSearcher:
    """One live library per server and index, shared by every session: a re-index publishes
    a new version, loaded once on the next run with the same embedder (a local index's new
    version opens only its new segment: readers are shared, kb.store.local.segments)."""
    return LiveSearcher(index_dir, warm=True)


# --------------------------------------------------------------------------- navigation


FILTER_FIELDS = {name: FIELD_LABELS[name] for name in ("source", "author", "folder", "type", "tag")}
URL_FILTERS = (*FILTER_FIELDS, "after", "before", "in")  # "in": within these documents ("doc" opens one)


def url_filters() -> tuple[Filters, str | None]:
    """The filters the URL carries, and what is wrong with them (then none apply)."""
    p = st.query_params
    values: dict = {name: p.get_all(name) for name in FILTER_FIELDS}
    values.update(after=p.get("after") or None, before=p.get("before") or None, doc=p.get_all("in"))
    try:
        return Filters.make(**values), None
    except FilterError as e:
        return Filters(), f"筛选条件无效（{e}），已忽略"


def _set_url(params: dict) -> None:
    st.query_params.clear()
    for key, value in params.items():
        if value:
            st.query_params[key] = value


def go(**params) -> None:
    """Switch view through the URL, so every view can be shared and reloaded; the question
    and the filters stay unless ``params`` replace them."""
    keep = {key: st.query_params.get_all(key) for key in ("q", *URL_FILTERS) if key not in params}
    _set_url({**{k: (v[0] if k == "q" and v else v) for k, v in keep.items()}, **params})


def on_query_change() -> None:
    q, _ = bound_query(st.session_state.get("q_input", ""))
    go(q=q)


def on_filter_change() -> None:
    """The filter panel's choices into the URL (a filtered search can be shared)."""
    ss = st.session_state
    params = {name: list(ss.get(f"f_{name}") or []) for name in FILTER_FIELDS}
    params.update(after=(ss.get("f_after") or "").strip(), before=(ss.get("f_before") or "").strip(),
                  **{"in": list(ss.get("f_in") or [])})
    go(**params)


def search_in_document(doc_id: str) -> None:
    """「在本文档中搜索」: the search narrowed to this one document."""
    st.session_state["f_in"] = [doc_id]
    go(**{"in": [doc_id], "doc": None, "p": None})


# --------------------------------------------------------------------------- pieces


def crumb_html(title: str, heading_path: list[str], place: str = "", ocr: bool = False) -> str:
    parts = [f'<span class="kb-doc">{text_html(title)}</span>']
    parts += [text_html(h) for h in heading_path[1:]]
    badges = (f'<span class="kb-loc">{text_html(place)}</span>' if place else "") + (
        '<span class="kb-ocr" title="这段文字由扫描件识别（OCR）得到，可能有错字">OCR</span>' if ocr else "")
    return '<span class="kb-sep">›</span>'.join(parts) + badges


def empty_reason(searcher: Searcher, filters: Filters) -> str:
    """Which filter left no document, said in Chinese (the API's ``empty_because`` is English)."""
    name = searcher.field_index().emptying_field(filters)
    if name is None:
        labels = {**FIELD_LABELS, "after": "日期", "before": "日期", "doc": "文档"}
        return "没有同时符合" + "、".join(dict.fromkeys(labels[n] for n in filters.set_fields())) + "这些条件的文档"
    value = shown_value(getattr(filters, name), "、")
    if name in ("after", "before"):
        return f"没有 {value} {'以后' if name == 'after' else '以前'}的文档"
    if name == "doc":
        return "所选的文档不在知识库中"
    return f"没有{FIELD_LABELS[name]}为“{value}”的文档"


def meta_html(meta: dict) -> str:
    return text_html(meta_line(meta))


def hit_card(rank: int | None, hit, weak: bool = False) -> str:
    dense, lexical = hit.scores.get("dense", 0.0), hit.scores.get("lexical", 0.0)
    explain = f"语义相似度 {dense:.2f} · 关键词得分 {lexical:.2f}"
    detail = [f'<span class="kb-score" title="{text_html(explain)}">相关度 {hit.score:.2f}</span>',
              f"语义 {dense:.2f}", f"关键词 {lexical:.2f}"]
    if weak:
        detail[0] += '<span class="kb-weak">相关度低</span>'
    if hit.matched_terms:
        detail.append("命中 " + "、".join(text_html(t) for t in hit.matched_terms[:8]))
    source = meta_html(hit.meta)
    if source:
        detail.append(source)
    rank_html = f'<span class="kb-rank">{rank}</span>' if rank else ""
    return (
        f'<div class="kb-card"><div class="kb-crumb">{rank_html}'
        f'{crumb_html(hit.title, hit.heading_path, hit.locator, hit.ocr)}</div>'
        f'<div class="kb-text">{highlight_html(hit.text, hit.matched_terms, hit.best_sentence)}</div>'
        f'<div class="kb-meta">{" · ".join(detail)}</div></div>'
    )


def citation_style() -> str:
    return CITE_STYLES[st.session_state.get("cite_style", CITE_LABELS[0])]


def hit_actions(hit, key: str, related: bool = True, select: bool = False) -> None:
    # st.code has a copy button: the citation is copied with one click, in the chosen style
    st.code(hit.cited(citation_style()).citation, language=None, wrap_lines=True)
    cols = st.columns([1, 1, 1, 2])
    if related:
        cols[0].button("相关段落", key=f"rel-{key}", on_click=go, kwargs={"p": hit.id},
                       help="与这一段内容相近的其他段落")
    cols[1].button("查看全文", key=f"doc-{key}", on_click=go, kwargs={"doc": hit.doc_id, "p": hit.id},
                   help="打开整篇文档并定位到这一段")
    if select:
        cols[2].checkbox("选中", key=f"sel-{hit.id}", help="选中的结果可以导出为 BibTeX 或 RIS")


def citation_bar(hits) -> None:
    """The citation style for every card, and export of the selected hits (all of them
    when none is selected) for reference managers."""
    cols = st.columns([2, 1, 1])
    cols[0].selectbox("引用格式", CITE_LABELS, key="cite_style", label_visibility="collapsed",
                      help="复制按钮复制的引用格式")
    chosen = [h for h in hits if st.session_state.get(f"sel-{h.id}")] or hits
    refs = [h.reference for h in chosen]
    what = f"导出 {len(chosen)} 条" if len(chosen) < len(hits) else "全部导出"
    cols[1].download_button(f"{what} BibTeX", export(refs, "bibtex"), file_name="kb-citations.bib",
                            mime="application/x-bibtex", key="export_bib")
    cols[2].download_button(f"{what} RIS", export(refs, "ris"), file_name="kb-citations.ris",
                            mime="application/x-research-info-systems", key="export_ris")


# --------------------------------------------------------------------------- views


def view_no_index(index_dir: str) -> None:
    st.title("kb 知识库检索")
    st.info("还没有索引。先把文档建成索引，然后就可以提问了。")
    show_notices(st)
    roots = library_roots()
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**用示例语料**")
        st.caption("kb 自带的一篇示例文章")
        if st.button("用示例语料建立索引", type="primary", disabled=not SAMPLE_CORPUS.is_dir()):
            build_index(SAMPLE_CORPUS, index_dir)
    with c2:
        st.markdown("**用自己的文件夹**")
        if not roots:
            st.caption("管理员没有开放任何文件夹（环境变量 KB_LIBRARY_ROOTS）。也可以在命令行运行 kb index 文件夹。")
        folder = st.text_input("文件夹路径", placeholder="/path/to/docs", key="folder_input", max_chars=1024,
                               disabled=not roots)
        if st.button("建立索引", disabled=not (folder and roots)):
            try:
                target = confine(folder, roots)
            except KBError as e:
                say("error", f"不能索引这个文件夹：{e}")
                return
            build_index(target, index_dir)


def build_index(folder: Path, index_dir: str, **kw) -> bool:
    bar = st.progress(0.0, text="准备中…")
    warnings: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{STAGES.get(stage, stage)} {done}/{total}")

    try:
        report = update_index(folder, index_dir, progress=False, warn=warnings.append, on_progress=progress, **kw)
    except KBError as e:
        bar.empty()
        note("error", f"索引失败：{e}")
        st.rerun()
        return False
    bar.progress(1.0, text="完成")
    note("success", report.summary())
    for w in warnings:
        note("warning", f"未能读取：{w}")
    st.rerun()
    return True


def view_search(searcher: Searcher, settings: dict) -> None:
    st.title("kb 知识库检索")
    st.text_input("问题", key="q_input", on_change=on_query_change, label_visibility="collapsed",
                  placeholder="输入问题，按回车搜索，例如：如何转变服务理念（\"加引号\"的词句必须出现，-词 排除）",
                  max_chars=MAX_QUERY_CHARS)
    query, cut = bound_query(st.query_params.get("q", ""))
    if not query:
        st.caption("输入一个问题或几个关键词，按回车。结果按相关度排列，每条都注明出处，可以复制引用、查看相关段落或打开全文。")
        return
    if cut:
        st.caption(f"问题太长，只用了前 {MAX_QUERY_CHARS} 个字。")
    response, ms = settings["response"], settings["ms"]
    if response is None:
        return
    facet_line(response.facets)
    hits = response.hits
    if response.empty_because:
        st.info(f"没有符合筛选条件的文档：{empty_reason(searcher, settings['filters'])}。请放宽或取消左侧的筛选条件。")
        return
    if not hits:
        st.info("没有找到相关段落。试试换个说法、减少关键词，或取消左侧的筛选条件。")
        return
    weak = bool(response.low_confidence)
    if weak:
        hits = hits[:WEAK_SHOWN]
        st.warning("没有足够相关的段落。下面是最接近的几条，相关度低，仅供参考；试试换个说法。")
    st.markdown(f'<p class="kb-summary" data-q="{text_html(query)}">找到 {len(hits)} 条结果 · {ms:.0f} 毫秒</p>',
                unsafe_allow_html=True)
    citation_bar(hits)
    for i, hit in enumerate(hits, 1):
        st.markdown(hit_card(i, hit, weak=weak), unsafe_allow_html=True)
        hit_actions(hit, key=f"{i}-{hit.id}", select=True)


def view_passage(searcher: Searcher, passage_id: str) -> None:
    st.button("← 返回搜索结果", on_click=go, kwargs={})
    try:
        view = searcher.show(passage_id, context=0)
        related = searcher.related(passage_id, k=6)
        hit = searcher.passage_hit(passage_id)
    except KBError as e:
        say("error", str(e))
        return
    p, doc = view["passage"], view["document"]
    st.subheader("段落")
    st.markdown(
        f'<div class="kb-card"><div class="kb-crumb">'
        f'{crumb_html(doc.title, p["heading_path"], view.get("locator", ""), view.get("ocr", False))}</div>'
        f'<div class="kb-text">{text_html(p["text"])}</div>'
        f'<div class="kb-meta">{meta_html(doc.meta)}</div></div>', unsafe_allow_html=True)
    hit_actions(hit, key=f"focus-{p['id']}", related=False)
    st.subheader("相关段落")
    if not related:
        st.info("没有找到相关段落。")
    for i, r in enumerate(related, 1):
        st.markdown(hit_card(i, r), unsafe_allow_html=True)
        hit_actions(r, key=f"r{i}-{r.id}")


def facet_line(facets: dict | None) -> None:
    """Where the answers are: documents of the passages the hits were ranked from, per field."""
    if not facets:
        return
    parts = []
    for field, counts in facets.items():
        if counts and (len(counts) > 1 or field in ("year", "type")):
            shown = " · ".join(f"{text_html(v or '（根目录）' if field == 'folder' else v or '（无）')} {n}"
                               for v, n in list(counts.items())[:6])
            parts.append(f"<b>{FIELD_LABELS[field]}</b> {shown}")
    if parts:
        st.markdown('<p class="kb-facets">' + "　".join(parts) + "</p>", unsafe_allow_html=True)


def view_document(searcher: Searcher, doc_id: str, passage_id: str | None) -> None:
    cols = st.columns([1, 1])
    cols[0].button("← 返回搜索结果", on_click=go, kwargs={})
    cols[1].button("在本文档中搜索", on_click=search_in_document, args=(doc_id,), key="search_in_doc")
    try:
        full_doc = searcher.document(doc_id)
        view = searcher.show(passage_id, context=1) if passage_id else None
    except KBError as e:
        say("error", str(e))
        return
    doc = full_doc["document"]
    st.markdown(f'<div class="kb-title">{text_html(doc.title)}</div>', unsafe_allow_html=True)
    meta = doc.meta
    lines = []
    if meta.get("author"):
        position = f"（{meta['author_position']}）" if meta.get("author_position") else ""
        lines.append("作者：" + meta["author"] + position)
    for key, label in (("source", "来源"), ("editor", "编辑"), ("date", "日期")):
        if meta.get(key):
            lines.append(f"{label}：{meta[key]}" + (f" {meta['time']}" if key == "date" and meta.get("time") else ""))
    if meta.get("url"):
        lines.append("原文：" + meta["url"])
    lines.append(f"文件：{doc.path} · {doc.n_passages} 个段落")
    st.markdown('<div class="kb-doc-meta">' + "<br>".join(text_html(x) for x in lines) + "</div>",
                unsafe_allow_html=True)
    text = full_doc["text"]
    if view:
        p = view["passage"]
        crumb = crumb_html(doc.title, p["heading_path"], view.get("locator", ""), view.get("ocr", False))
        st.markdown(f'<div class="kb-crumb" style="margin-top:1rem">{crumb}</div>', unsafe_allow_html=True)
        parts = [f'<div class="kb-context">{text_html(b["text"])}</div>' for b in view["before"]]
        parts.append(f'<div class="kb-text"><span class="kb-focus">{text_html(p["text"])}</span></div>')
        parts += [f'<div class="kb-context">{text_html(a["text"])}</div>' for a in view["after"]]
        st.markdown("".join(parts), unsafe_allow_html=True)
        st.code(searcher.passage_hit(p["id"]).cited(citation_style()).citation, language=None, wrap_lines=True)
        full = document_html(text, (p["start"], p["end"]))
    else:
        full = document_html(text)
    st.subheader("全文")
    st.markdown(f'<div class="kb-fulltext">{full}</div>', unsafe_allow_html=True)
    if view:
        scroll_to_focus(view["passage"]["id"])


# Scrolls the page to the highlighted passage of the full text once it is drawn: a fixed script
# (no document text in it) in a zero-height component, run again only for another passage.
_SCROLL = """<script>
const page = window.parent.document;
function go(tries) {
  const mark = page.querySelector("mark.kb-focus-inline");
  if (mark) { mark.scrollIntoView({block: "center"}); }
  else if (tries > 0) { setTimeout(() => go(tries - 1), 100); }
}
go(50);
</script><!-- %s -->"""


def scroll_to_focus(passage_id: str) -> None:
    import streamlit.components.v1 as components

    components.html(_SCROLL % re.sub(r"[^0-9a-f:]", "", passage_id), height=0)


# --------------------------------------------------------------------------- sidebar


def sidebar(searcher: Searcher, index_dir: str) -> dict:
    sb = st.sidebar
    stats = searcher.stats()
    sb.markdown("### 知识库")
    emb = stats["embedder"]
    sb.markdown(
        f"文档 **{stats['documents']}** · 段落 **{stats['passages']}**  \n"
        f"模型 {text_html(redact_paths(str(emb['model'])))}（{emb['dim']} 维）  \n"
        f"更新于 {text_html(str(stats['created'])[:16].replace('T', ' '))}"
    )
    show_notices(sb)

    sb.markdown("### 检索设置")
    mode_label = sb.radio("方式", list(MODES), horizontal=True, key="mode",
                          help="混合 = 语义 + 关键词；语义 = 按意思；关键词 = 按词语")
    k = sb.slider("结果数量", 3, 30, 10, key="k")
    titles = {d.doc_id: d.title for d in searcher.documents()}
    filters, problem = url_filters()
    if problem:
        sb.warning(problem)
    query = bound_query(st.query_params.get("q", ""))[0]
    response, ms = None, 0.0
    if query and not st.query_params.get("doc") and not st.query_params.get("p"):  # the search view
        t0 = time.perf_counter()
        try:
            response = search_response(searcher, query, k=k, mode=MODES[mode_label], filters=filters, facets=True)
        except KBError as e:
            say("error", str(e))
        ms = (time.perf_counter() - t0) * 1000
    filter_panel(sb, searcher, titles, filters, response.facets if response else None)

    corpus = Path(searcher.manifest.get("corpus", ""))
    _, _, may_write = actor()
    if not may_write:  # a read key: searching only
        return {"mode": MODES[mode_label], "k": k, "filters": filters, "response": response, "ms": ms}
    sb.markdown("### 管理文档")
    with sb.form("upload", clear_on_submit=True):
        files = st.file_uploader(
            f"添加文档（{' '.join(s.lstrip('.') for s in UPLOAD_SUFFIXES)}；每个不超过 {UPLOAD_LIMIT_MB} MB，"
            f"一次最多 {UPLOAD_MAX_FILES} 个、共 {UPLOAD_TOTAL_MB} MB）",
            type=list(UPLOAD_SUFFIXES), accept_multiple_files=True, key="uploads")
        submitted = st.form_submit_button("添加并建立索引")
    if submitted and files:
        add_files(files, corpus, index_dir)
    if titles:
        with sb.expander("移出文档"):
            target = st.selectbox("文档", list(titles), format_func=lambda i: titles[i], key="remove_doc")
            confirm = st.checkbox("确认移出（文件移到知识库的 .kb-trash 文件夹，不会删除）", key="remove_confirm")
            if st.button("移出知识库", disabled=not confirm, key="remove_btn"):
                remove(searcher, target, corpus, index_dir)
    vocabulary_editor(sb, searcher, corpus, index_dir)
    return {"mode": MODES[mode_label], "k": k, "filters": filters, "response": response, "ms": ms}


def vocabulary_editor(sb, searcher: Searcher, corpus: Path, index_dir: str) -> None:
    """The library's dictionary and synonyms (its .kb/words.txt and synonyms.txt), edited
    and applied: saving re-tokenises what holds a changed word and embeds nothing."""
    kept = searcher.vocabulary.to_json()
    with sb.expander("词典与同义词"):
        with st.form("vocabulary"):
            words = st.text_area("词典（每行一个词，可加词频和词性：三码合一 10 n）", "\n".join(kept["words"]),
                                 key="vocab_words", height=140, max_chars=200_000)
            synonyms = st.text_area("同义词（每行一组：居民医保, 基本医疗保险；单向：交多少钱 => 缴费标准）",
                                    "\n".join(kept["synonyms"]), key="vocab_synonyms", height=100,
                                    max_chars=200_000)
            saved = st.form_submit_button("保存并更新索引")
    if saved:
        save_vocabulary(words, synonyms, corpus, index_dir)


def save_vocabulary(words: str, synonyms: str, corpus: Path, index_dir: str) -> None:
    folder = library_folder(corpus)
    if folder is None:
        st.rerun()
        return
    own, bad_words = parse_words(words.splitlines(), "词典")
    rules, bad_rules = parse_synonyms(synonyms.splitlines(), "同义词")
    for problem in bad_words + bad_rules:
        note("warning", f"{problem}（这一行没有保存）")
    try:  # the lines that can be used, as kb reads them
        save_library_file(folder, "words.txt", "".join(w.line() + "\n" for w in own))
        save_library_file(folder, "synonyms.txt", "".join(r.line() + "\n" for r in rules))
        audit("vocabulary.save", f"{len(own)} words, {len(rules)} synonym rules")
    except (KBError, OSError) as e:
        note("error", f"未能保存词典：{e}")
        st.rerun()
        return
    for key in ("vocab_words", "vocab_synonyms"):  # show what the index keeps from now on
        st.session_state.pop(key, None)
    with st.sidebar:
        build_index(folder, index_dir)


def filter_panel(sb, searcher: Searcher, titles: dict[str, str], filters: Filters, facets: dict | None) -> None:
    """Source, author, folder, type and tag choices (with the current question's counts), a date
    range and documents; each choice narrows at once and is kept in the URL."""
    sb.markdown("### 筛选")
    options: dict[str, set[str]] = {name: set() for name in FILTER_FIELDS}
    for d in searcher.docs:
        f = document_fields(d)
        for name in ("source", "author", "folder", "type"):
            if f[name]:
                options[name].add(f[name])
        options["tag"].update(f["tags"])
    for name, label in FILTER_FIELDS.items():
        values = sorted(options[name] | set(getattr(filters, name)))
        if not values:
            continue
        key = f"f_{name}"
        if key not in st.session_state:
            st.session_state[key] = [v for v in getattr(filters, name) if v in values]
        counts = (facets or {}).get(name, {}) if name != "folder" else {}
        sb.multiselect(label, values, key=key, on_change=on_filter_change, placeholder=f"全部{label}",
                       format_func=lambda v, c=counts: f"{v}（{c[v]}）" if v in c else v)
    cols = sb.columns(2)
    for col, name, label in ((cols[0], "after", "从"), (cols[1], "before", "到")):
        key = f"f_{name}"
        if key not in st.session_state:
            st.session_state[key] = getattr(filters, name) or ""
        col.text_input(f"{label}（日期）", key=key, on_change=on_filter_change, placeholder="2024-01-01",
                       max_chars=10)
    if "f_in" not in st.session_state:
        st.session_state["f_in"] = [i for i in filters.doc if i in titles]
    sb.multiselect("只看这些文档", list(titles), format_func=lambda i: titles.get(i, i), key="f_in",
                   on_change=on_filter_change, placeholder="全部文档")


def library_folder(corpus: Path) -> Path | None:
    """The folder uploads go to and removals act in (:func:`kb.serve.uploads.document_folder`: the
    library's docs folder, else the one its index was built from), or None with the reason shown."""
    try:
        return document_folder(corpus, st.session_state.get("kb_docs"))
    except KBError as e:
        note("error", f"不能修改知识库文件夹：{e}")
        return None


def actor() -> tuple[str, str, bool]:
    """Who this session is, in which library, and whether they may change it: (key name, library,
    may write), as main() set it (a page run without it: this machine's visitor, who may)."""
    return st.session_state.get("kb_actor", (ANYONE.name, "default", True))


def audit(action: str, obj: str = "") -> None:
    """A write from the page, in KB_HOME's audit log."""
    name, library_name, _ = actor()
    audit_write(kb_home(), name, library_name, action, obj)


def add_files(files, corpus: Path, index_dir: str) -> None:
    folder = library_folder(corpus)
    if folder is None:
        st.rerun()
        return
    total = 0
    added = 0
    for n, f in enumerate(files):
        if n >= UPLOAD_MAX_FILES:
            note("warning", f"一次最多添加 {UPLOAD_MAX_FILES} 个文件，其余 {len(files) - n} 个没有添加。")
            break
        total += f.size
        if total > UPLOAD_TOTAL_MB * 1024 * 1024:
            note("warning", f"未添加：{f.name}：这次上传超过了总共 {UPLOAD_TOTAL_MB} MB 的限制。")
            continue
        try:
            save_upload(folder, f.name, f.getvalue(), max_bytes=UPLOAD_LIMIT_MB * 1024 * 1024,
                        suffixes=UPLOAD_SUFFIXES)
            added += 1
            audit("document.upload", f.name)
        except KBError as e:
            note("warning", f"未添加：{e}")
    if not added:
        st.rerun()
        return
    with st.sidebar:
        build_index(folder, index_dir)


def remove(searcher: Searcher, doc_id: str, corpus: Path, index_dir: str) -> None:
    folder = library_folder(corpus)
    if folder is None:  # library_folder has said why
        st.rerun()
        return
    try:
        path = searcher.document_info(doc_id).path
        remove_document(folder, path)
        audit("document.remove", path)
    except KBError as e:
        note("error", f"未能移出：{e}")
        st.rerun()
        return
    with st.sidebar:
        build_index(folder, index_dir, prune=True)


# --------------------------------------------------------------------------- main


def main() -> None:
    harden()  # also when started as a plain `streamlit run app.py` (kb page hardens before the server starts)
    st.set_page_config(page_title="kb · 知识库检索", page_icon="📚", layout="centered")
    st.markdown(CSS, unsafe_allow_html=True)
    who = access_granted()
    if who is None:
        return
    chosen = choose_library(who)
    if chosen is None:
        return
    index_dir = chosen.index
    st.session_state["kb_actor"] = (who.name, chosen.name, who.may("write"))
    st.session_state["kb_docs"] = chosen.docs
    try:
        library = live_searcher(index_dir)
        live = library.version()
        if live is None:
            view_no_index(index_dir)
            return
        with st.spinner("正在加载索引…"):
            searcher = library.current(live)
    except KBError as e:
        say("error", f"无法打开索引：{e}")
        return
    if "q_input" not in st.session_state:
        st.session_state["q_input"] = bound_query(st.query_params.get("q", ""))[0]
    settings = sidebar(searcher, index_dir)
    params = st.query_params
    if params.get("doc"):
        view_document(searcher, params["doc"], params.get("p"))
    elif params.get("p"):
        view_passage(searcher, params["p"])
    else:
        view_search(searcher, settings)


def run_page() -> None:
    """main() with a last guard: a bug shows one sentence, never a traceback or a path."""
    try:
        main()
    except Exception as e:  # st.rerun()/st.stop() raise BaseException subclasses: they pass through
        st.error("页面出错了，请刷新后重试。如果问题一直出现，请告诉管理员（错误类型："
                 + text_html(type(e).__name__) + "）。")


if __name__ == "__main__":  # `streamlit run kb/serve/page.py` (what `kb page` does)
    run_page()
