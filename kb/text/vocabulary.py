"""A library's own vocabulary: a user dictionary (jieba's format) and synonyms (Solr's).

- **Words** (``word [freq] [tag]`` a line): each becomes one term of the tokenizer — cut out
  whole wherever it occurs and never split into the shorter words search mode adds (so
  ``上海交通大学`` does not match everything with ``上海``). They shape the index: a change
  re-tokenises the documents that hold a changed word (:meth:`Vocabulary.changed_words`).
- **Synonyms** (``a, b, c`` equivalents; ``a => b, c`` one way; ``#`` comments): they widen
  a query's keyword side only — the index stays as written — each added term weighted
  :data:`SYNONYM_WEIGHT`, so a passage with the asked word itself still ranks first.

Both are read from files (``--words``/``--synonyms``, or ``FOLDER/.kb/words.txt`` and
``synonyms.txt``), kept by the index in its manifest and used by every searcher of it. A
malformed line is one warning naming the file and line; the rest is used.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from kb.errors import KBError
from kb.text.process import fold

SYNONYM_WEIGHT = 0.6  # an added synonym's share of a query term's keyword weight
MAX_WORDS = 100_000  # lines of a dictionary that are read
MAX_SYNONYMS = 20_000  # lines of a synonyms file that are read
MAX_LINE = 200  # characters of one line
MAX_FILE_BYTES = 8 * 1024 * 1024
WORDS_FILE = "words.txt"  # in FOLDER/.kb/
SYNONYMS_FILE = "synonyms.txt"

_SPACE = re.compile(r"\s+")
_COMMENT = re.compile(r"(?:^|\s)#")
_WORD_OK = re.compile(r"[\w\u4e00-\u9fff]")


@dataclass(frozen=True)
class Word:
    word: str  # folded, as tokens are
    freq: int | None = None  # None: jieba suggests one that keeps the word whole
    tag: str | None = None

    def line(self) -> str:
        return " ".join(str(x) for x in (self.word, self.freq, self.tag) if x is not None)


@dataclass(frozen=True)
class Synonym:
    """``terms`` are equivalent (each finds the others); a one-way rule (``a => b``) has
    ``targets``: a query with a term of ``terms`` also looks for the ``targets``."""

    terms: tuple[str, ...]
    targets: tuple[str, ...] = ()

    def line(self) -> str:
        return ", ".join(self.terms) + (" => " + ", ".join(self.targets) if self.targets else "")


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[Word, ...] = ()
    synonyms: tuple[Synonym, ...] = ()
    _tokens: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # a term's tokens

    def __bool__(self) -> bool:
        return bool(self.words or self.synonyms)

    # ------------------------------------------------------------------ identity
    @property
    def words_digest(self) -> str:
        return _digest(w.line() for w in self.words)

    @property
    def synonyms_digest(self) -> str:
        return _digest(s.line() for s in self.synonyms)

    def to_json(self) -> dict:
        """What an index keeps (its manifest): the normalised lines of both files."""
        return {"words": [w.line() for w in self.words], "synonyms": [s.line() for s in self.synonyms]}

    @classmethod
    def of_manifest(cls, manifest: Mapping | None) -> Vocabulary:
        """The vocabulary an index's manifest keeps (none: :data:`EMPTY`)."""
        return cls.from_json(((manifest or {}).get("pipeline") or {}).get("vocabulary"))

    @classmethod
    def from_json(cls, data: Mapping | None) -> Vocabulary:
        if not data:
            return EMPTY
        return cls(parse_words(data.get("words") or (), "index")[0],
                   parse_synonyms(data.get("synonyms") or (), "index")[0])

    def describe(self) -> dict:
        """What ``kb stats`` shows."""
        return {"words": len(self.words), "synonyms": len(self.synonyms),
                "words_digest": self.words_digest[:12] if self.words else None,
                "synonyms_digest": self.synonyms_digest[:12] if self.synonyms else None}

    def changed_words(self, other: Vocabulary) -> set[str]:
        """Words added, removed or given another frequency between ``other`` and this: the
        text that holds one of them is tokenised differently (and only that text: the
        tokenizer's total frequency is kept, so other text cuts as before)."""
        mine, theirs = self._frequencies(), other._frequencies()
        return {w for w in mine.keys() | theirs.keys() if mine.get(w) != theirs.get(w)}

    def _frequencies(self) -> dict[str, int]:
        """Each word's frequency as the tokenizer uses it (a suggested one depends on the
        words before it)."""
        t = self.tokenizer()
        return {w.word: t.FREQ[w.word] for w in self.words} if t is not None else {}

    # ------------------------------------------------------------------ use
    def tokenizer(self):
        """A jieba tokenizer with these words (None without words: jieba's own)."""
        if not self.words:
            return None
        return _tokenizer(self.words_digest, self.words)

    def expand(self, query: str, tokens: Sequence[str],
               tokenize: Callable[[str], list[str]]) -> dict[str, tuple[str, str]]:
        """The terms synonyms add to a query: ``{term: (the query's word, the synonym the
        term comes from)}``. A rule applies when one of its terms is in the folded query as
        words (its tokens among the query's); its other terms (or targets) are tokenised as
        the query is, and only terms the query lacks are added."""
        if not self.synonyms:
            return {}
        text = fold(query)
        have = set(tokens)
        added: dict[str, tuple[str, str]] = {}
        for rule in self._rules_in(text):
            # a term applies when the question holds it as words, not as a piece of another
            # word (国家 is not in 中国家庭): its tokens are among the question's
            hit = next((t for t in rule.terms if t in text and set(self._terms_of(t, tokenize)) <= have), None)
            if hit is None:
                continue
            for other in (rule.targets or rule.terms):
                if other == hit:
                    continue
                for term in self._terms_of(other, tokenize):
                    if term not in have and term not in added:
                        added[term] = (hit, other)
        return added

    @cached_property
    def _heads(self) -> dict[str, set[int]]:
        """The rules (their positions) by the first two characters of each of their terms."""
        heads: dict[str, set[int]] = {}
        for i, rule in enumerate(self.synonyms):
            for t in rule.terms:
                heads.setdefault(t[:2], set()).add(i)
        return heads

    def _rules_in(self, text: str) -> list[Synonym]:
        """The rules one of whose terms may be in ``text``: those whose term begins with a pair
        of characters (or a character) the text holds, in file order — a long file costs
        what the question's length does, not its own."""
        heads = self._heads
        found: set[int] = set()
        for i in range(len(text)):
            for key in (text[i:i + 2], text[i]):
                if key in heads:
                    found |= heads[key]
        return [self.synonyms[i] for i in sorted(found)]

    def _terms_of(self, phrase: str, tokenize) -> list[str]:
        got = self._tokens.get(phrase)
        if got is None:
            got = tokenize(phrase)
            if len(self._tokens) < 50_000:
                self._tokens[phrase] = got
        return got


EMPTY = Vocabulary()


def holds_any(text: str, words: set[str]) -> bool:
    """Whether ``text`` holds one of ``words`` (each two characters or more): only words whose
    first two characters occur in the text are looked for, so thousands of words cost little."""
    if len(words) <= 16:
        return any(w in text for w in words)
    pairs = {text[i:i + 2] for i in range(len(text) - 1)}
    return any(w[:2] in pairs and w in text for w in words)


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- parsing

def _lines(source: Path | Iterable[str], what: str, limit: int, warn) -> Iterable[tuple[int, str]]:
    if isinstance(source, Path):
        try:
            with open(source, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise KBError(f"cannot read the {what} file {source}: {e.strerror or e}") from e
        if len(raw) > MAX_FILE_BYTES:
            warn(f"{source}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; only the start is used")
            raw = raw[:MAX_FILE_BYTES]
        lines: Iterable[str] = raw.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    else:
        lines = source
    for n, line in enumerate(lines, 1):
        if n > limit:
            warn(f"{source}: more than {limit:,} lines; the rest is not used")
            return
        yield n, line


def parse_words(source: Path | Iterable[str], where: str = "",
                warn: Callable[[str], None] = lambda m: None) -> tuple[tuple[Word, ...], list[str]]:
    """Words of a jieba user dictionary (``word [freq] [tag]`` a line; ``#`` starts a comment,
    blank lines are skipped); a line that cannot be used is a warning naming it."""
    where = where or str(source)
    out: dict[str, Word] = {}
    problems: list[str] = []

    def bad(n: int, why: str) -> None:
        problems.append(f"{where} line {n}: {why}")
        warn(problems[-1])

    for n, line in _lines(source, "words", MAX_WORDS, warn):
        line = _COMMENT.split(line, 1)[0].strip()  # "# ..." at the start or after a space (C# stays a word)
        if not line:
            continue
        if len(line) > MAX_LINE:
            bad(n, f"longer than {MAX_LINE} characters; skipped")
            continue
        parts = _SPACE.split(line)
        word = fold(parts[0])
        freq: int | None = None
        tag = None
        rest = parts[1:]
        if rest and rest[0].isdigit():
            freq = int(rest[0])
            rest = rest[1:]
        if rest:
            tag = rest[0]
        if len(rest) > 1 or (rest and not re.fullmatch(r"[A-Za-z]{1,8}", tag or "")):
            bad(n, "expected `word [frequency] [tag]` (a tag is letters, like nz); skipped")
            continue
        if not _WORD_OK.search(word) or len(word) < 2:
            bad(n, f"{parts[0]!r} is not a word of two characters or more; skipped")
            continue
        if freq == 0:
            bad(n, "frequency 0 would force the word apart; skipped (leave a word out to drop it)")
            continue
        out[word] = Word(word, freq, tag)
    return tuple(out.values()), problems


def parse_synonyms(source: Path | Iterable[str], where: str = "",
                   warn: Callable[[str], None] = lambda m: None) -> tuple[tuple[Synonym, ...], list[str]]:
    """Rules of a Solr synonyms file: ``a, b, c`` (equivalent) or ``a, b => c, d`` (one
    way); ``#`` starts a comment."""
    where = where or str(source)
    out: list[Synonym] = []
    seen: set[str] = set()
    problems: list[str] = []

    def bad(n: int, why: str) -> None:
        problems.append(f"{where} line {n}: {why}")
        warn(problems[-1])

    def terms(side: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t in (fold(x).strip() for x in re.split(r"[,，、]", side)) if t))

    for n, line in _lines(source, "synonyms", MAX_SYNONYMS, warn):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line) > MAX_LINE:
            bad(n, f"longer than {MAX_LINE} characters; skipped")
            continue
        if line.count("=>") > 1:
            bad(n, "more than one `=>`; skipped")
            continue
        if "=>" in line:
            left, right = (terms(s) for s in line.split("=>"))
            if not left or not right:
                bad(n, "`a => b` needs terms on both sides; skipped")
                continue
            rule = Synonym(left, tuple(t for t in right if t not in left) or right)
        else:
            group = terms(line)
            if len(group) < 2:
                bad(n, "a line of equivalents needs two terms or more, separated by commas; skipped")
                continue
            rule = Synonym(group)
        if any(not _WORD_OK.search(t) for t in rule.terms + rule.targets):
            bad(n, "a term without letters or characters; skipped")
            continue
        if rule.line() not in seen:
            seen.add(rule.line())
            out.append(rule)
    return tuple(out), problems


def load_vocabulary(folder: Path | None, words: str | Path | None = None, synonyms: str | Path | None = None,
                    remembered: Vocabulary = EMPTY,
                    warn: Callable[[str], None] = lambda m: None) -> Vocabulary:
    """The vocabulary a ``kb index`` run uses: each part from the file given (``--words``,
    ``--synonyms``; an empty file clears it), else from ``folder/.kb/``, else the one the
    index remembers."""
    parts = {}
    for name, given, default, parse, kept in (
            ("words", words, WORDS_FILE, parse_words, remembered.words),
            ("synonyms", synonyms, SYNONYMS_FILE, parse_synonyms, remembered.synonyms)):
        path = Path(given) if given else (folder / ".kb" / default if folder is not None else None)
        if given and not path.is_file():
            raise KBError(f"{path}: no such {name} file")
        if path is not None and path.is_file():
            parts[name] = parse(path, str(path), warn)[0]
        else:
            parts[name] = kept
    return Vocabulary(parts["words"], parts["synonyms"])


# --------------------------------------------------------------------------- the tokenizer

_tokenizers: OrderedDict[str, object] = OrderedDict()
_tok_lock = threading.Lock()


def _tokenizer(digest: str, words: tuple[Word, ...]):
    with _tok_lock:
        if digest in _tokenizers:
            _tokenizers.move_to_end(digest)
            return _tokenizers[digest]
    from kb.text.process import _get_jieba

    jieba = _get_jieba()
    base = jieba.dt
    base.check_initialized()
    t = jieba.Tokenizer()
    t.FREQ, t.total, t.initialized = dict(base.FREQ), base.total, True
    for w in words:
        t.add_word(w.word, w.freq, w.tag)
    t.total = base.total  # text without these words cuts exactly as before
    t.user_words = frozenset(w.word for w in words)
    t.user_heads = frozenset(w.word[:2] for w in words)
    t.user_lengths = sorted({len(w.word) for w in words}, reverse=True)
    with _tok_lock:
        _tokenizers[digest] = t
        while len(_tokenizers) > 4:
            _tokenizers.popitem(last=False)
    return t
