"""Text rules shared by reading, splitting and ranking: normalisation that keeps a map
back to the original text, sentence boundaries, and jieba tokens for BM25."""

from __future__ import annotations

import bisect
import logging
import os
import pickle
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- normalisation

_SPACE_RUN = re.compile(r"[ \t\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_ZERO_WIDTH = re.compile(r"[\u200b-\u200d\u2060\ufeff]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n|\u2028|\u2029")
_STRIP_CHARS = " \t\f\v\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u202f\u205f\u3000\u200b\u200c\u200d\u2060\ufeff"


@dataclass
class OffsetMap:
    """Piecewise map from positions in normalised text to positions in the original.

    Each piece ``k`` covers normalised positions ``[norm[k], norm[k+1])`` and maps them
    one-to-one onto the original starting at ``orig[k]``. Compact (one pair per run of
    unchanged text) so that a large document does not cost a list entry per character.
    """

    norm: list[int]
    orig: list[int]
    length: int  # length of the normalised text
    orig_length: int

    def to_original(self, i: int) -> int:
        if i >= self.length:
            return self.orig_length
        k = bisect.bisect_right(self.norm, i) - 1
        if k < 0:
            return 0
        return self.orig[k] + (i - self.norm[k])

    def to_normalized(self, o: int) -> int:
        """The normalised position of original position ``o`` (a position that
        normalisation removed maps to where its run resumes)."""
        k = bisect.bisect_right(self.orig, o) - 1
        if k < 0:
            return 0
        end = self.norm[k + 1] if k + 1 < len(self.norm) else self.length
        return min(self.norm[k] + (o - self.orig[k]), end)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original ``[start, end)`` of the normalised span ``[start, end)``."""
        if end <= start:
            pos = self.to_original(start)
            return pos, pos
        return self.to_original(start), self.to_original(end - 1) + 1

    def to_json(self) -> dict:
        return {"norm": self.norm, "orig": self.orig, "length": self.length, "orig_length": self.orig_length}

    @classmethod
    def from_json(cls, data: dict) -> OffsetMap:
        return cls(data["norm"], data["orig"], data["length"], data["orig_length"])


def normalize(original: str) -> tuple[str, OffsetMap]:
    """Normalise line breaks, full-width and other spaces, zero-width characters and runs
    of blank lines, keeping an :class:`OffsetMap` back into ``original``.

    - CRLF / CR / Unicode line separators become ``\\n``;
    - each line is stripped; inside a line any run of spaces (ASCII, no-break, full-width
      ``\\u3000``...) becomes one ASCII space; zero-width characters and BOMs vanish;
    - one or more blank lines between two lines become exactly one blank line;
    - leading and trailing blank lines are dropped.
    """
    out: list[str] = []
    norm_starts: list[int] = []
    orig_starts: list[int] = []
    pos = 0  # length of normalised output so far

    def emit(s: str, orig_at: int) -> None:
        nonlocal pos
        norm_starts.append(pos)
        orig_starts.append(orig_at)
        out.append(s)
        pos += len(s)

    pending_break: tuple[int, int] | None = None  # (orig position of the break, blank lines seen)
    line_start = 0
    lines: list[tuple[int, int, int]] = []  # (start, end, break position after it or -1)
    for m in _LINE_BREAK.finditer(original):
        lines.append((line_start, m.start(), m.start()))
        line_start = m.end()
    lines.append((line_start, len(original), -1))

    for start, end, brk in lines:
        line = original[start:end]
        lstripped = line.lstrip(_STRIP_CHARS)
        content_start = start + (len(line) - len(lstripped))
        content = lstripped.rstrip(_STRIP_CHARS)
        if not content:
            if pending_break is not None:
                pending_break = (pending_break[0], pending_break[1] + 1)
            if brk >= 0 and pending_break is None and pos > 0:
                pending_break = (brk, 1)
            continue
        if pending_break is not None and pos > 0:
            brk_at, blanks = pending_break
            emit("\n\n" if blanks > 0 else "\n", brk_at)
        pending_break = None
        _emit_line(content, content_start, emit)
        if brk >= 0:
            pending_break = (brk, 0)

    text = "".join(out)
    return text, OffsetMap(norm_starts, orig_starts, len(text), len(original))


def _emit_line(content: str, base: int, emit) -> None:
    i = 0
    for m in re.finditer(f"{_SPACE_RUN.pattern}|{_ZERO_WIDTH.pattern}", content):
        if m.start() > i:
            emit(content[i:m.start()], base + i)
        if _SPACE_RUN.fullmatch(m.group()):
            emit(" ", base + m.start())
        i = m.end()
    if i < len(content):
        emit(content[i:], base + i)


# --------------------------------------------------------------------------- sentences

_CLOSERS = "”’」』）)】》\"'"
_SENTENCE_END = re.compile(r"(?:[。！？!?；;]+|…+|\.{3,})[" + re.escape(_CLOSERS) + r"]*|\n+")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``[(s, e)]`` spans of sentences in ``text[start:end]``, ends included
    (``。！？；…`` and their ASCII forms, with closing quotes; a line break also ends one).
    Spans exclude surrounding whitespace; empty spans are dropped."""
    end = len(text) if end is None else end
    spans = []
    s = start
    for m in _SENTENCE_END.finditer(text, start, end):
        e = m.end() if not m.group().startswith("\n") else m.start()
        _add_span(text, s, e, spans)
        s = m.end()
    _add_span(text, s, end, spans)
    return spans


def trim_span(text: str, s: int, e: int) -> tuple[int, int] | None:
    """``[s, e)`` without surrounding whitespace, or ``None`` when nothing is left."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if e > s else None


def _add_span(text: str, s: int, e: int, spans: list) -> None:
    span = trim_span(text, s, e)
    if span:
        spans.append(span)


def split_sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


# --------------------------------------------------------------------------- tokens

_jieba_lock = threading.Lock()
_jieba = None

# Function words and question words carry no topic: they match everywhere and only add noise.
STOP_WORDS = frozenset(
    """的 了 是 在 和 与 及 或 而 也 都 就 又 被 把 对 从 向 以 于 为 之 其 这 那 此 该 各 每 个 等 着 过 吗 呢 吧 啊 呀
    么 嘛 哦 有 没有 要 会 能 可 可以 什么 如何 怎样 怎么 怎么样 为什么 为何 哪些 哪个 哪里 哪儿 哪 谁 多少 几 是否
    是不是 有没有 请问 一下 一个 一种 这个 那个 这些 那些 我们 你们 他们 它们 我 你 他 她 它 自己 以及 并且 而且 还是
    因为 所以 但是 但 如果 虽然 然后 还有 就是 不是 已经 比较 非常 进行 通过 关于 其中 或者 并 且 则 即 所 得 地
    a an the of to in on for is are was were be and or what how why which who""".split()
)

_TOKEN_OK = re.compile(r"[\w\u4e00-\u9fff]")


def _get_jieba():
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                cache_dir = os.environ.get("KB_CACHE_DIR")
                if cache_dir:
                    os.makedirs(cache_dir, exist_ok=True)
                    jieba.dt.tmp_dir = cache_dir
                _initialize_jieba(jieba)
                _jieba = jieba
    return _jieba


def _dictionary_cache(jieba) -> Path | None:
    """Where the pickled prefix dictionary of this jieba's default dictionary lives: a private
    cache folder (never a shared temp dir, since a pickle is code), named after the
    dictionary file's version, size and mtime so that any change makes a new one."""
    if jieba.dt.dictionary is not None:  # a custom main dictionary: jieba's own way
        return None
    root = os.environ.get("KB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "kb")
    try:
        st = os.stat(os.path.join(os.path.dirname(jieba.__file__), "dict.txt"))
    except OSError:
        return None
    return Path(root) / f"jieba-{jieba.__version__}-{st.st_size}-{st.st_mtime_ns}.pickle"


def _initialize_jieba(jieba) -> None:
    """jieba.initialize() unmarshals a 500,000-entry prefix dictionary: 1.3 s on a small
    machine, most of a `kb search` process. The same dictionary pickled loads in 0.25 s,
    so kb keeps that copy and installs it; tokens are identical (same dictionary)."""
    dt = jieba.dt
    path = _dictionary_cache(jieba)
    if path is not None:
        try:
            with open(path, "rb") as f:
                freq, total = pickle.load(f)
            with dt.lock:
                dt.FREQ, dt.total, dt.initialized = freq, total, True
            return
        except Exception:  # absent, unreadable (another user's home) or from another Python: rebuilt below
            pass
    jieba.initialize()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:  # a read-only home: jieba's own cache still works, only slower
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump((dt.FREQ, dt.total), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def fold(text: str) -> str:
    """Fold for matching: full-width letters and digits to ASCII, lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str, stop_words: frozenset[str] = STOP_WORDS, tokenizer=None, query: bool = False) -> list[str]:
    """BM25 tokens: jieba search-mode words of the folded text, minus punctuation and
    stop words, then the text's identifiers as whole terms (:func:`identifier_terms`).
    Search mode also emits the shorter words inside long ones (``马克思主义`` -> ``马克思``,
    ``主义``, ``马克思主义``), which helps recall. ``tokenizer``: a jieba tokenizer holding a
    library's own words (:meth:`kb.text.vocabulary.Vocabulary.tokenizer`), cut out whole
    wherever they occur; in a ``query`` such a word is one term, never the shorter words
    inside it (``上海交通大学`` asks for that, not for everything with ``上海``), while the
    text it is found in is indexed with them as well."""
    folded = fold(text)
    if tokenizer is None:
        words = _get_jieba().cut_for_search(folded)
    else:
        words = _cut_with_words(tokenizer, folded, query)
    tokens = []
    for tok in words:
        tok = tok.strip()
        if not tok or tok in stop_words or not _TOKEN_OK.search(tok):
            continue
        tokens.append(tok)
    extra = identifier_terms(folded)
    if extra:
        have = set(tokens)
        tokens += [t for t in extra if t not in have]
    return tokens


def _cut_with_words(tokenizer, text: str, query: bool):
    """jieba's search mode, with the tokenizer's own words cut out first wherever they occur
    (leftmost, longest): in a query each is one term; in a text, its shorter words too."""
    for piece, own in _own_word_spans(tokenizer, text):
        if own and query:
            yield piece
        else:
            yield from tokenizer.cut_for_search(piece)


def _own_word_spans(tokenizer, text: str):
    """``text`` as ``(piece, is one of the tokenizer's words)``; only where a word's first two
    characters occur is a word looked for."""
    own, heads, lengths = tokenizer.user_words, tokenizer.user_heads, tokenizer.user_lengths
    i = start = 0
    n = len(text)
    while i < n - 1:
        if text[i:i + 2] in heads:
            for length in lengths:
                if i + length <= n and text[i:i + length] in own:
                    if start < i:
                        yield text[start:i], False
                    yield text[i:i + length], True
                    i = start = i + length
                    break
            else:
                i += 1
        else:
            i += 1
    if start < n:
        yield text[start:], False


# --------------------------------------------------------------------------- identifiers

# Codes of letters and digits with - / . _ : (PPR-9087, v2.3.5, GB/T 7714-2015, ISO 9001:2015),
# in folded (lower-case, half-width) text; a space is allowed between the letters and the number.
_CODE = re.compile(r"(?<![a-z0-9])([a-z]{1,10}(?:/[a-z]{1,3})?) ?([-_.]?\d[0-9a-z]*(?:[-_./:][0-9a-z]+)*)")
_YEAR_TAIL = re.compile(r"^(.*\d.*?)[-:]((?:19|20)\d\d)$")
# Document numbers: 机关代字〔年份〕序号号 with 〔〕 [] () 【】 (full-width ones fold to these).
_DOC_NO = re.compile(r"([\u4e00-\u9fff]{2,12}) ?[〔\[(【] ?((?:19|20)\d\d) ?[〕\])】] ?第? ?(\d{1,5}) ?号")


# Article numbers: 第十二条 and 第12条 are one term, 第12条 (also 款, 项, 章, 节).
_ARTICLE = re.compile(r"第 ?([0-9]{1,4}|[零〇一二两三四五六七八九十百千]{1,8}) ?(条|款|项|章|节)")
_DIGIT = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_UNIT = {"十": 10, "百": 100, "千": 1000}


def chinese_number(text: str) -> int | None:
    """``十二`` -> 12, ``一百零五`` -> 105, ``12`` -> 12 (None when it is not a number)."""
    if text.isdigit():
        return int(text)
    total, digit = 0, None
    for c in text:
        if c in _DIGIT:
            digit = _DIGIT[c]
        elif c in _UNIT:
            total += (1 if digit is None else digit) * _UNIT[c]
            digit = None
        else:
            return None
    return total + (digit or 0)


def identifier_terms(folded: str) -> list[str]:
    """Identifiers in ``folded`` text as whole terms, besides the words and numbers jieba cuts
    them into: a code as written without its space (``gb/t7714-2015``; a standard also
    without its year, ``gb/t7714``), a document number in one bracket form, with and without
    the last two to four characters of its issuer (``[2024]3号``, ``办发[2024]3号``,
    ``国办发[2024]3号``), an article number in digits (``第12条`` for ``第十二条``) — so that
    the passage holding exactly the asked identifier ranks above its siblings that share the
    parts."""
    out: dict[str, None] = {}
    if "第" in folded:
        for m in _ARTICLE.finditer(folded):
            number = chinese_number(m.group(1))
            if number:
                out[f"第{number}{m.group(2)}"] = None
    if not any(c.isdigit() for c in folded):
        return list(out)
    for m in _CODE.finditer(folded):
        letters, rest = m.group(1), m.group(2)
        code = letters + rest
        if len(code) < 3 or not any(c.isdigit() for c in rest):
            continue
        out[code] = None
        base = _YEAR_TAIL.match(code)
        if base and ("/" in letters or len(letters) <= 5) and any(c.isdigit() for c in base.group(1)):
            out[base.group(1)] = None
    for m in _DOC_NO.finditer(folded):
        issuer, number = m.group(1), f"[{m.group(2)}]{int(m.group(3))}号"
        out[number] = None
        for n in (2, 3, 4):
            if len(issuer) >= n:
                out[issuer[-n:] + number] = None
    return list(out)
