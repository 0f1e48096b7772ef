"""The user's vocabulary (issue 27): a dictionary of the library's own words, synonyms,
identifiers kept whole, exact phrases and exclusions — read from files, kept by the index,
the same on both stores, and a change re-tokenising only what holds a changed word."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kb.embed.embedders import HashEmbedder
from kb.index import update_index
from kb.search.query import parse_query
from kb.search.searcher import Searcher
from kb.serve.cli import cli
from kb.text.process import identifier_terms, tokenize
from kb.text.vocabulary import EMPTY, Vocabulary, load_vocabulary, parse_synonyms, parse_words

from .conftest import SAMPLE_DOC

NOTICE = ("关于三码合一工作的通知\n\n来源：市政府\n\n各单位要推进三码合一改革，做好登记工作。\n\n"
          "根据国办发〔2024〕3号文件，基本医疗保险缴费标准为每人每年380元。")
OTHER = ("关于设备管理的通知\n\n来源：信息中心\n\n三个窗口统一收码，编号管理由办公室负责。\n\n"
         "根据国办发〔2024〕4号文件，城乡居民养老保险按年缴纳。")


# ---------------------------------------------------------------------------- files

def test_a_dictionary_line_is_word_frequency_tag_and_a_bad_line_is_one_warning_naming_it(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("# 本单位的词\n三码合一 10 n\n居民医保\nPPR-9087 5\n三码 0\n坏 行 有 太多\nx\n\n", encoding="utf-8")
    said: list[str] = []
    words, problems = parse_words(f, "words.txt", said.append)
    assert [(w.word, w.freq, w.tag) for w in words] == [("三码合一", 10, "n"), ("居民医保", None, None),
                                                        ("ppr-9087", 5, None)]
    assert problems == said and [p.split(":")[0] for p in problems] == ["words.txt line 5", "words.txt line 6",
                                                                        "words.txt line 7"]


def test_synonyms_are_equivalents_or_one_way_and_a_bad_line_is_skipped(tmp_path):
    rules, problems = parse_synonyms(["居民医保, 基本医疗保险  # 医保", "交多少钱 => 缴费标准", "单独",
                                      "a => b => c", " => 缺左边", "", "# 注释"], "syn.txt")
    assert [(r.terms, r.targets) for r in rules] == [(("居民医保", "基本医疗保险"), ()), (("交多少钱",), ("缴费标准",))]
    assert [p.split(":")[0] for p in problems] == ["syn.txt line 3", "syn.txt line 4", "syn.txt line 5"]


def test_the_vocabulary_kept_by_an_index_reads_back_as_it_was():
    v = Vocabulary(parse_words(["三码合一 10 n", "居民医保"])[0], parse_synonyms(["a, b", "c => d"])[0])
    again = Vocabulary.from_json(json.loads(json.dumps(v.to_json())))
    assert again == v and again.words_digest == v.words_digest and Vocabulary.from_json(None) == EMPTY


# ---------------------------------------------------------------------------- tokens

def test_a_dictionary_word_is_one_term_of_a_query_and_the_text_keeps_its_parts():
    v = Vocabulary(parse_words(["上海交通大学", "三码合一"])[0])
    t = v.tokenizer()
    assert tokenize("上海交通大学的招生", tokenizer=t, query=True) == ["上海交通大学", "招生"]
    indexed = tokenize("上海交通大学的招生", tokenizer=t)
    assert "上海交通大学" in indexed and "上海" in indexed  # a question about 上海 still finds it
    assert tokenize("推进三码合一改革", tokenizer=t, query=True) == ["推进", "三码合一", "改革"]
    assert "三码合一" not in tokenize("推进三码合一改革")  # jieba alone cuts it apart


def test_text_without_a_dictionary_word_is_cut_exactly_as_without_a_dictionary():
    v = Vocabulary(parse_words(["三码合一 10", "居民医保", "组工干部队伍"])[0])
    t = v.tokenizer()
    text = SAMPLE_DOC.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and "组工干部队伍" not in line]
    assert lines and all(tokenize(line, tokenizer=t) == tokenize(line) for line in lines)


@pytest.mark.parametrize("typed", ["国办发〔2024〕3号", "国办发[2024]3号", "国办发(2024)3号", "国办发【2024】3号",
                                   "国办发（2024）3号", "国办发 [2024] 3 号"])
def test_a_document_number_is_the_same_term_however_its_brackets_are_typed(typed):
    assert {"[2024]3号", "办发[2024]3号", "国办发[2024]3号"} <= set(tokenize(typed))


def test_codes_standards_and_articles_are_whole_terms():
    assert "ppr-9087" in identifier_terms("资产编号ppr-9087的设备")
    assert {"gb/t7714-2015", "gb/t7714"} <= set(tokenize("GB/T 7714-2015")) & set(tokenize("GB/T7714-2015"))
    assert "v2.3.5" in tokenize("升级到v2.3.5版本") and "iso9001:2015" in tokenize("ISO 9001:2015")
    assert "第12条" in tokenize("依照第十二条规定") and "第12条" in tokenize("第12条")
    assert "第105条" in tokenize("第一百零五条")
    assert identifier_terms("没有编号的普通句子") == []


# ---------------------------------------------------------------------------- the query

def test_phrases_and_exclusions_are_taken_out_of_the_question():
    q = parse_query('“由被动式服务向主动服务转变” 组工干部 -考核 "一次不用跑"')
    assert q.phrases == ("由被动式服务向主动服务转变", "一次不用跑") and q.excluded == ("考核",)
    assert q.text == "由被动式服务向主动服务转变 组工干部 一次不用跑"
    assert q.admits("要由被动式服务，向主动服务转变，做到一次不用跑。") and not q.admits("由被动式服务向主动服务转变")
    assert not q.admits("由被动式服务向主动服务转变，一次不用跑，年终考核")
    plain = parse_query("PPR-9087 资产  登记")
    assert not plain and plain.text == "PPR-9087 资产  登记"  # a hyphen inside a code is not an exclusion


# ---------------------------------------------------------------------------- a library

@pytest.fixture
def library(tmp_path):
    docs = tmp_path / "docs"
    (docs / ".kb").mkdir(parents=True)
    (docs / "a.txt").write_text(NOTICE, encoding="utf-8")
    (docs / "b.txt").write_text(OTHER, encoding="utf-8")
    for i in range(30):  # siblings that share every part of the asked code
        (docs / f"asset{i}.txt").write_text(f"资产卡片\n\n资产编号PPR-90{i:02d}，存放在{i % 5}号库房，责任人登记在册。",
                                            encoding="utf-8")
    return docs, tmp_path / "index"


def _index(docs, index, **kw):
    return update_index(docs, index, embedder=HashEmbedder(64), progress=False, warn=lambda m: None, **kw)


def test_the_library_files_are_kept_by_the_index_and_a_change_re_tokenises_only_what_holds_it(library):
    docs, index = library
    (docs / ".kb" / "words.txt").write_text("三码合一\n", encoding="utf-8")
    (docs / ".kb" / "synonyms.txt").write_text("居民医保, 基本医疗保险\n", encoding="utf-8")
    first = _index(docs, index)
    s = Searcher.load(index)
    assert s.vocabulary.describe()["words"] == 1 and s.vocabulary.describe()["synonyms"] == 1
    assert [h.path for h in s.search("三码合一", k=1, mode="lexical")] == ["a.txt"]
    assert first.embedded > 0

    (docs / ".kb" / "words.txt").write_text("三码合一\n办公室\n", encoding="utf-8")  # only b.txt holds 办公室
    second = _index(docs, index)
    assert (second.retokenised, second.embedded, second.changed) == (1, 0, 0)
    (docs / ".kb" / "synonyms.txt").write_text("居民医保, 基本医疗保险\n养老, 养老保险\n", encoding="utf-8")
    third = _index(docs, index)
    assert (third.retokenised, third.embedded, third.updated) == (0, 0, True)  # synonyms: the index as written
    assert Searcher.load(index).vocabulary.describe()["synonyms"] == 2

    for f in (docs / ".kb").iterdir():
        f.unlink()
    fourth = _index(docs, index)  # no files now: the index keeps what it has
    assert not fourth.updated and Searcher.load(index).vocabulary.describe()["words"] == 2
    empty = docs.parent / "empty.txt"
    empty.write_text("", encoding="utf-8")
    fifth = _index(docs, index, words=empty)  # an empty file clears the dictionary
    assert fifth.retokenised == 2 and Searcher.load(index).vocabulary.describe()["words"] == 0
    with pytest.raises(Exception, match="no such words file"):
        load_vocabulary(docs, words=docs / "missing.txt")


def test_a_dictionary_word_ranks_what_holds_it_and_synonyms_rank_below_the_word_asked(library):
    docs, index = library
    (docs / ".kb" / "words.txt").write_text("三码合一\n", encoding="utf-8")
    (docs / ".kb" / "synonyms.txt").write_text("居民医保, 基本医疗保险\n交多少钱 => 缴费标准\n", encoding="utf-8")
    _index(docs, index)
    s = Searcher.load(index)
    hits = s.search("三码合一", k=5, mode="lexical")
    assert {h.path for h in hits} == {"a.txt"} and hits[0].matched_terms == ["三码合一"]  # not 三个…码 in b.txt
    hits = s.search("居民医保一年交多少钱", k=3, mode="lexical")
    assert hits[0].path == "a.txt" and hits[0].synonyms == {"基本医疗保险": "居民医保", "缴费标准": "交多少钱"}
    assert "基本医疗保险" in hits[0].matched_terms or "医疗保险" in hits[0].matched_terms
    assert s.search("缴费标准", k=1, mode="lexical")[0].synonyms == {}  # one way: 缴费标准 does not mean 交多少钱
    # the word asked outranks its synonym: a passage saying 基本医疗保险 vs one saying 居民医保
    (docs / "c.txt").write_text("居民医保办理指南\n\n居民医保在社区窗口办理。", encoding="utf-8")
    _index(docs, index)
    s = Searcher.load(index)
    ranked = [h.path for h in s.search("基本医疗保险", k=5, mode="lexical")]
    assert ranked[0] == "a.txt" and "c.txt" in ranked


def test_the_asked_identifier_comes_first_among_siblings_however_it_is_typed(library):
    docs, index = library
    _index(docs, index)
    s = Searcher.load(index)
    for code in ("PPR-9017", "ppr-9017", "ＰＰＲ－９０１７"):
        assert s.search(code, k=1, mode="hybrid")[0].text.count("PPR-9017") == 1, code
    for number in ("国办发[2024]4号", "国办发(2024)4号", "国办发〔2024〕4号"):
        assert s.search(number, k=1)[0].path == "b.txt", number


def test_a_phrase_is_in_every_hit_and_an_excluded_word_in_none(library):
    docs, index = library
    _index(docs, index)
    s = Searcher.load(index)
    hits = s.search('"责任人登记" 资产 -3号库房', k=50, mode="hybrid")
    assert len(hits) == 24  # 30 cards, less the 6 in 3号库房
    assert all("责任人登记" in h.text and "3号库房" not in h.text for h in hits)
    assert s.search('"登记，在册"', k=5)  # punctuation and spacing do not matter
    assert s.search('"没有这句话的任何文档"', k=5) == []
    with pytest.raises(Exception, match="besides the words to leave out"):
        s.search("-资产", k=5)


def test_the_cli_takes_the_files_and_stats_shows_them(library):
    docs, index = library
    words, syn = docs.parent / "w.txt", docs.parent / "s.txt"
    words.write_text("三码合一\n坏 行 有 太多\n", encoding="utf-8")
    syn.write_text("居民医保, 基本医疗保险\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["index", str(docs), "--index", str(index), "--model", "hash:64", "-q",
                                 "--words", str(words), "--synonyms", str(syn)])
    assert r.exit_code == 0, r.output
    assert "w.txt line 2:" in r.output  # the bad line named, the rest used
    r = CliRunner().invoke(cli, ["stats", "--index", str(index)])
    assert "dictionary  1 words, 1 synonym rules" in r.output
    r = CliRunner().invoke(cli, ["stats", "--index", str(index), "--json"])
    assert json.loads(r.output)["dictionary"]["words"] == 1
    r = CliRunner().invoke(cli, ["index", str(docs), "--index", str(index), "--words", str(docs / "nope.txt")])
    assert r.exit_code != 0 and "nope.txt" in r.output


@pytest.mark.milvus
def test_milvus_tokenises_and_expands_as_the_local_store(library, tmp_path):
    pytest.importorskip("milvus_lite")
    from kb.store.milvus.library import release

    docs, index = library
    (docs / ".kb" / "words.txt").write_text("三码合一\n" + "".join(f"词条{i:05d}\n" for i in range(6000)),
                                            encoding="utf-8")  # a manifest longer than a Milvus row
    (docs / ".kb" / "synonyms.txt").write_text("居民医保, 基本医疗保险\n交多少钱 => 缴费标准\n", encoding="utf-8")
    _index(docs, index)
    db = str(tmp_path / "kb.db")
    _index(docs, db)
    try:
        local, milvus = Searcher.load(index), Searcher.load(db)
        assert milvus.vocabulary == local.vocabulary and milvus.vocabulary.describe()["words"] == 6001
        for q in ("三码合一", "居民医保一年交多少钱", "PPR-9017", "国办发(2024)3号", '"责任人登记" -3号库房'):
            for mode in ("lexical", "hybrid"):
                a = [(h.id, h.score, h.synonyms) for h in local.search(q, k=10, mode=mode)]
                b = [(h.id, h.score, h.synonyms) for h in milvus.search(q, k=10, mode=mode)]
                assert a == b, (q, mode)
        (docs / ".kb" / "words.txt").write_text("三码合一\n", encoding="utf-8")
        assert _index(docs, db).retokenised == _index(docs, index).retokenised
    finally:
        release(db)


def test_suggest_lists_the_librarys_terms_that_the_tokenizer_cuts_apart_and_list_shows_the_files(tmp_path):
    import random

    from kb.text.process import split_sentences

    rng = random.Random(1)
    prose = [x for x in split_sentences(SAMPLE_DOC.read_text(encoding="utf-8")) if len(x) > 10]
    docs = tmp_path / "docs"
    docs.mkdir()
    before = ["推进", "落实", "开展", "完成", "实施", "深化", "部署", "做好", "抓好", "加快"]
    after = ["改革", "工作", "试点", "登记", "审批", "要求", "任务", "进度", "办理", "窗口"]
    for i in range(12):
        lines = [f"{rng.choice(before)}三码合一{rng.choice(after)}，{rng.choice(before)}一网通办{rng.choice(after)}。"
                 for _ in range(4)]
        (docs / f"n{i}.txt").write_text(f"第{i}号通知\n\n" + "".join(lines + rng.sample(prose, 12)), encoding="utf-8")
    index = tmp_path / "index"
    _index(docs, index)
    r = CliRunner().invoke(cli, ["words", "suggest", "--index", str(index), "--json"])
    assert r.exit_code == 0, r.output
    found = {f["word"]: f for f in json.loads(r.output)}
    assert {"三码合一", "一网通办"} <= set(found) and found["三码合一"]["count"] == 48
    assert found["三码合一"]["example"].startswith("n")
    pasted = CliRunner().invoke(cli, ["words", "suggest", "--index", str(index)]).output
    (docs / ".kb").mkdir()
    (docs / ".kb" / "words.txt").write_text(pasted, encoding="utf-8")  # the output is a dictionary as it is
    assert _index(docs, index).retokenised == 12
    r = CliRunner().invoke(cli, ["words", "suggest", "--index", str(index), "--json"])
    assert not {"三码合一", "一网通办"} & {f["word"] for f in json.loads(r.output)}  # now kept whole
    listed = CliRunner().invoke(cli, ["words", "list", "--index", str(index)]).output
    assert "三码合一" in listed and "# synonyms: 0 rules" in listed


def test_bm25_with_a_dictionary_is_the_reference_over_the_same_tokens(library):
    import numpy as np

    bm25s = pytest.importorskip("bm25s")
    docs, index = library
    (docs / ".kb" / "words.txt").write_text("三码合一\n责任人登记\n", encoding="utf-8")
    _index(docs, index)
    s = Searcher.load(index)
    [seg] = s.snapshot.segments
    stored = [(r[0] or "").split(" ") for r in seg.store.con.execute("SELECT tokens FROM passages ORDER BY row")]
    assert any("三码合一" in t for t in stored) and any("责任人登记" in t for t in stored)
    ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    ref.index(stored, show_progress=False)
    for q in ("推进三码合一改革", "PPR-9017 责任人登记", "国办发(2024)3号"):
        tokens = [t for t in dict.fromkeys(s.tokenize(q)) if t in ref.vocab_dict]
        ids, scores = ref.retrieve([tokens], k=len(stored), show_progress=False)
        expected = np.zeros(len(stored), dtype=np.float32)
        expected[ids[0]] = scores[0]
        assert np.allclose(s.snapshot.bm25(tokens, 1.2, 0.75), expected * 2.2, atol=1e-4), q
    one = s.snapshot.bm25(["三码合一"], 1.2, 0.75)
    assert np.allclose(s.snapshot.bm25({"三码合一": 0.6}, 1.2, 0.75), 0.6 * one)  # a synonym's weight
