from __future__ import annotations

import random

from kb.text.process import OffsetMap, normalize, sentence_spans, split_sentences, tokenize


def test_normalize_crlf_fullwidth_spaces_and_blank_runs():
    original = "\ufeff标题\r\n\r\n\r\n\u3000\u3000第一段，有　全角 \xa0 空格。\r\n第二段\u200b文字\r\n\r\n"
    text, m = normalize(original)
    assert text == "标题\n\n第一段，有 全角 空格。\n第二段文字"


def test_offsets_point_back_into_the_original(corpus):
    from tests.conftest import SAMPLE_DOC

    original = SAMPLE_DOC.read_text(encoding="utf-8")
    text, m = normalize(original)
    assert "\u00a0" not in text and "\n\n\n" not in text
    rng = random.Random(0)
    for i in rng.sample(range(len(text)), 500):
        o = m.to_original(i)
        if text[i] in " \n":
            assert original[o].isspace()
        else:
            assert original[o] == text[i]
    # a span maps to the same characters
    s = text.index("一要勤于学习")
    os_, oe = m.span(s, s + 6)
    assert original[os_:oe] == "一要勤于学习"


def test_offset_map_is_compact_and_serialisable():
    text, m = normalize("a  b\r\n\r\nc" * 1000)
    assert len(m.norm) < len(text)
    again = OffsetMap.from_json(m.to_json())
    assert [again.to_original(i) for i in range(0, len(text), 7)] == [m.to_original(i) for i in range(0, len(text), 7)]


def test_sentence_ends_include_closing_quotes_and_semicolons():
    text = "他说：“学而不思则罔。”要多思考；要多实践！真的吗？好……最后一句"
    assert split_sentences(text) == [
        "他说：“学而不思则罔。”", "要多思考；", "要多实践！", "真的吗？", "好……", "最后一句",
    ]
    spans = sentence_spans(text, 5, 20)
    assert all(5 <= s < e <= 20 for s, e in spans)


def test_tokenize_drops_stop_and_question_words_and_keeps_search_mode_subwords():
    toks = tokenize("建设马克思主义学习型政党有什么要求？")
    assert "什么" not in toks and "有" not in toks and "？" not in toks
    assert {"马克思主义", "马克思", "学习型", "政党", "要求"} <= set(toks)
    assert tokenize("ＡＢＣ１２３") == tokenize("abc123")


_TOKENS = """
import json, sys
import jieba
if sys.argv[1] == "cached":  # the dictionary must come from kb's pickle, not jieba's own start-up
    jieba.Tokenizer.initialize = lambda self, dictionary=None: sys.exit("jieba.initialize called")
from kb.text.process import tokenize
print(json.dumps(tokenize("组工干部要站在学习贯彻党的十九大精神的最前列，南京长江大桥")))
"""


def test_jieba_dictionary_is_cached_as_a_pickle_and_tokens_are_unchanged(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "KB_CACHE_DIR": str(tmp_path)}

    def run(how):
        r = subprocess.run([sys.executable, "-c", _TOKENS, how], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    first = run("build")
    (cache,) = tmp_path.glob("jieba-*.pickle")
    assert run("cached") == first == tokenize("组工干部要站在学习贯彻党的十九大精神的最前列，南京长江大桥")
    assert "最前列" in first or "前列" in first
    cache.write_bytes(b"not a pickle")  # a damaged cache is rebuilt, never fatal
    assert run("build") == first and cache.stat().st_size > 1000
