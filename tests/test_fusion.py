"""The learned fusion: its features (pure), its model file, its training (kb.learn) and the
related-passages score."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest

from kb.errors import KBError
from kb.eval.learn import Question, fit, in_train, main, mrr, set_weights
from kb.rank.fusion import (
    FEATURES,
    MODEL_PATH,
    FusionModel,
    Pool,
    RankingConfig,
    features,
    load_model,
    related_scores,
    telling_terms,
)

from .conftest import FIXTURES


def pool(**over) -> Pool:
    base = dict(n_terms=8, dense=np.array([0.9, 0.5, 0.2]), lexical=np.array([0.1, 0.6, 0.0]),
                dense_rank=np.array([1, 2, 0]), lexical_rank=np.array([3, 1, 0]),
                cover=np.array([0.2, 0.8, 0.0]), head_cover=np.array([0.0, 1.0, 0.0]),
                length=np.array([100, 40, 10]), sub=np.array([0.0, 1.0, 0.0]),
                doc=["a", "a", "b"], family=[("a:0", None), ("a:1", "a:0"), ("b:0", None)])
    return Pool(**(base | over))


def col(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURES.index(name)]


def test_features_of_a_pool():
    cfg = RankingConfig()
    x = features(pool(), cfg)
    assert x.shape == (3, len(FEATURES))
    assert col(x, "convex") == pytest.approx([0.5, 0.55, 0.1])  # 0.5/0.5 at 8 terms
    assert col(x, "dense_x_lexical") == pytest.approx([0.09, 0.3, 0.0])
    # ranks: log1p of the rank, an absent candidate as far away as ABSENT_RANK
    assert col(x, "dense_rank")[0] == pytest.approx(np.log1p(1)) and col(x, "dense_rank")[2] > np.log1p(150)
    assert list(col(x, "dense_only")) == [0, 0, 0] and list(col(x, "lexical_only")) == [0, 0, 0]
    # the rest of the document: a has two candidates, each sees the other's convex score
    assert col(x, "doc_hits") == pytest.approx([np.log(2), np.log(2), 0.0])
    assert col(x, "doc_best_other") == pytest.approx([0.55, 0.5, 0.0])
    # parent and sub-point see each other
    assert col(x, "family_best") == pytest.approx([0.55, 0.5, 0.0])
    # a short query ramps the keyword channel down
    short = features(pool(n_terms=2), cfg)
    assert col(short, "lexical_ramped") == pytest.approx(col(x, "lexical") * 2 / 8)
    assert col(short, "convex")[1] < col(x, "convex")[1]
    assert features(pool(dense=np.zeros(0)), cfg).shape == (0, len(FEATURES))


def test_the_shipped_model_loads_and_describes_its_training():
    model = load_model()
    assert set(model.features) <= set(FEATURES) and len(model.weights) == len(model.features)
    info = model.info
    assert "python -m kb.learn" in info["command"] and info["questions"] > 1000
    scores = model.score(features(pool(), RankingConfig()))
    assert ((scores > 0) & (scores < 1)).all()


def test_a_model_file_for_other_features_is_refused(tmp_path):
    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    for names in (data["features"][:-1], data["features"][:-1] + ["a_feature_kb_does_not_compute"]):
        bad = tmp_path / "old.json"
        bad.write_text(json.dumps(dict(data, features=names)), encoding="utf-8")
        load_model.cache_clear()
        with pytest.raises(KBError, match="retrain"):
            load_model(str(bad))
    with pytest.raises(KBError, match="cannot read"):
        load_model(str(tmp_path / "missing.json"))


def synthetic(n: int, rng) -> list[Question]:
    """Questions whose positive has the highest `cover` but not the highest `dense`."""
    out = []
    for i in range(n):
        m = 20
        x = rng.normal(size=(m, len(FEATURES)))
        y = np.zeros(m)
        y[i % m] = 1
        x[:, FEATURES.index("cover")] += 4 * y
        x[:, FEATURES.index("dense")] -= 1 * y
        out.append(Question("s", f"a{i}", x, y, [f"p{j}" for j in range(m)], {f"p{i % m}"}))
    return out


def test_fit_learns_what_ranks_the_positive_first():
    rng = np.random.default_rng(0)
    model = fit(synthetic(200, rng), l2=1e-3)
    w = dict(zip(model.features, model.weights))
    assert w["cover"] > 0.5 and w["dense"] < 0
    held = synthetic(50, rng)
    assert np.mean([mrr(model.raw(q.x), q)[0] for q in held]) > 0.85
    assert np.mean([mrr(q.x[:, FEATURES.index("dense")], q)[0] for q in held]) < 0.5
    a, _ = model.calibration
    assert a > 0  # a higher score is more likely relevant
    again = FusionModel.from_json(json.loads(json.dumps(model.to_json())))
    assert np.allclose(again.raw(held[0].x), model.raw(held[0].x), atol=1e-4)


def test_the_split_is_by_article_and_stable():
    keys = [f"article {i}" for i in range(2000)]
    share = np.mean([in_train(k) for k in keys])
    assert 0.67 < share < 0.73
    assert [in_train(k) for k in keys] == [in_train(k) for k in keys]
    assert [in_train(k, "other seed") for k in keys] != [in_train(k) for k in keys]


def test_training_command_writes_a_model_search_uses(tmp_path, capsys):
    from kb.search.searcher import Searcher

    out = tmp_path / "fusion.json"
    args = [str(FIXTURES / "mini_eval"), "--model", "hash:64", "--out", str(out), "--no-progress"]
    main(args)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["split"]["train"] + report["split"]["held_out"] == 4
    first = out.read_bytes()
    main(args)  # the same data gives the same file
    assert out.read_bytes() == first
    model = load_model(str(out))
    assert model.info["questions"] == 4
    index = next((tmp_path / "index" / "eval").glob("mini_eval-*")) / "index"
    searcher = Searcher.load(index)
    searcher.config = replace(searcher.config, model=str(out))
    hits = searcher.search("梵语", k=3)
    assert hits and all(0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_related_scores_and_telling_terms():
    cfg = RankingConfig()
    s = related_scores(cfg, [0.8, 0.8, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 1.0])
    assert s[1] > s[0]  # the same title helps ...
    close = related_scores(cfg, [0.97], [0.9], [0.0])
    assert close[0] > s[2]  # ... but a much closer passage of another title still wins
    assert ((s >= 0) & (s <= 1)).all()
    idf = {"长江": 2.0, "水电": 3.0, "中国": 0.5}.get
    tokens = ["中国", "长江", "长江", "水电", "的"]
    assert telling_terms(tokens, {"长江"}, lambda t: idf(t) or 0.0, 2) == ["长江", "水电"]


def test_related_is_not_the_same_document_only(tmp_path):
    """A passage of another document that says nearly the same thing is listed among the
    sample speech's related passages, although every other passage of the speech shares
    its title."""
    from kb.search.searcher import Searcher

    from .conftest import SAMPLE_DOC, library_with

    text = SAMPLE_DOC.read_text(encoding="utf-8")
    start = text.index("胡总书记“七一”讲话中指出,我们必须按照建设马克思主义学习型政党")
    paragraph = text[start: text.index("\n", start)].strip()
    _, index = library_with(tmp_path, {"学习心得.txt": "学习心得\n\n" + paragraph[:200] + "\n"})
    s = Searcher.load(index)
    focus = next(h for h in s.search(paragraph[:60], k=10) if h.path == SAMPLE_DOC.name)
    related = s.related(focus.id, k=5)
    assert any(h.path == "学习心得.txt" for h in related), [(h.path, h.heading_path) for h in related]
    assert all(0 <= h.score <= 1 for h in related)


def test_a_model_worse_than_the_shipped_one_on_leave_one_set_out_is_refused():
    from kb.eval.learn import guard

    rng = np.random.default_rng(3)
    questions = [dataclasses.replace(q, dataset=name) for name in ("one", "two", "three")
                 for q in synthetic(60, rng)]

    def blind(train):  # a model that cannot see what ranks the positive first
        return fit(train, 1e-3, names=("log_length", "sub"))

    refused = guard(questions, blind)
    assert not refused["passed"] and refused["new"] < refused["shipped"]
    assert refused["protocol"] == "leave-one-set-out"
    shipped = load_model()
    same = guard(questions, lambda train: fit(train, shipped.info["l2"], set_weights(train), names=shipped.features))
    assert same["passed"] and same["new"] == same["shipped"]


# --------------------------------------------------------------------------- the shown score


def test_the_shown_score_keeps_the_order_of_the_hits_and_rewards_a_lead():
    from kb.rank.shown import ShownCalibration, shown_calibration

    cal = shown_calibration(load_model().fingerprint)
    assert cal is not None  # kb/data/shown.json was fitted for the shipped model
    rng = np.random.default_rng(3)
    for _ in range(200):
        logits = sorted(rng.normal(0, 4, size=int(rng.integers(1, 12))).tolist(), reverse=True)
        shown = cal.scores(logits)
        assert shown == sorted(shown, reverse=True) and all(0 <= p <= 1 for p in shown)
    alone, ahead = cal.scores([1.0, 0.9])[0], cal.scores([1.0, -3.0])[0]
    assert ahead > alone  # the same model score, standing out from the next hit, is surer
    assert ShownCalibration(1.0, 0.0, 0.0, "").scores([0.0]) == [0.5]


def test_the_shown_score_is_only_used_with_the_model_it_was_fitted_for(tmp_path):
    from kb.rank.shown import shown_calibration

    shipped = load_model()
    other = FusionModel(shipped.features, shipped.mean, shipped.scale, shipped.weights * 2, shipped.calibration)
    other.save(tmp_path / "model.json")
    retrained = load_model(str(tmp_path / "model.json"))
    assert retrained.fingerprint != shipped.fingerprint
    assert shown_calibration(retrained.fingerprint) is None  # a user's own model shows its own probability


def test_on_the_sample_the_answer_shows_as_likely_and_an_off_topic_question_is_flagged(sample_index):
    from kb.search.searcher import Searcher, search_response

    searcher = Searcher.load(sample_index)
    answer = search_response(searcher, "如何创新工作机制", k=5)
    assert answer.hits[0].text.startswith("三要创新机制") and answer.hits[0].score >= 0.5
    assert not answer.low_confidence
    assert search_response(searcher, "量子计算机的工作原理", k=5).low_confidence
