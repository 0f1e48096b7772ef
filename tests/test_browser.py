"""One real browser: Debian chromium driven by Playwright against `streamlit run`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
pytestmark = [pytest.mark.slow, pytest.mark.browser]


# A document that tries to make every visitor's browser fetch outside URLs (markdown image
# in its title, HTML image in its body, markdown links in its metadata).
HOSTILE = ("![x](http://example.org/title.png)\n\n来源：[官网](http://example.org/source)\n\n"
           "这份陷阱文档的正文里藏着图片<img src=http://example.org/body.png>和"
           "![图](http://example.org/md.png)两种外部请求，用来检验转义。\n")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Playwright:
    """playwright.sync_api, imported when a browser test runs (not when the module is
    collected: the fast suite never loads it)."""

    def __getattr__(self, name):
        if name != "sync_playwright":  # pytest inspects module attributes while collecting
            raise AttributeError(name)
        if not os.path.exists(CHROMIUM):
            pytest.skip("Debian chromium is not installed (apt-get install chromium fonts-wqy-zenhei)")
        return getattr(pytest.importorskip("playwright.sync_api", reason="pip install playwright"), name)


playwright = _Playwright()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from kb.index import update_index

    from .conftest import SAMPLE_CORPUS

    d = tmp_path_factory.mktemp("browser")
    corpus = d / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    (corpus / "hostile.txt").write_text(HOSTILE, encoding="utf-8")
    update_index(corpus, d / "index", progress=False, warn=lambda m: None)  # the real offline model
    port = _free_port()
    env = {**os.environ, "KB_INDEX": str(d / "index")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb.serve.streamlit_server", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.fileWatcherType", "none", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_search_cite_and_open_document(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1500}, locale="zh-CN")
        frames: list[bytes] = []  # what the server sends a visitor over the websocket
        page.on("websocket", lambda ws: ws.on(
            "framereceived", lambda data: frames.append(data if isinstance(data, bytes) else data.encode())))
        page.goto(server, wait_until="domcontentloaded")
        box = page.get_by_placeholder("输入问题，按回车搜索", exact=False)
        box.wait_for(timeout=30000)
        assert frames and not any(str(ROOT).encode() in f for f in frames)  # no server path (mainScriptPath)
        box.fill("组工干部如何由被动式服务向主动服务转变")
        box.press("Enter")
        first = page.locator(".kb-card").first
        first.wait_for(timeout=30000)
        assert "一要树立全新的服务理念" in first.inner_text()
        assert page.locator("mark.kb-term").count() > 0
        code = page.locator('[data-testid="stCode"]').first
        assert "百度文库, 2024-07-11" in code.inner_text() and "董清河" in code.inner_text()
        assert "q=" in page.url  # the query is in the URL
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=False)

        page.get_by_role("button", name="查看全文").first.click()
        page.locator(".kb-focus").first.wait_for(timeout=30000)
        assert "一要树立全新的服务理念" in page.locator(".kb-focus").first.inner_text()
        assert "董清河" in page.locator(".kb-doc-meta").inner_text()
        assert "doc=" in page.url
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "document.png"), full_page=False)

        # upload a new document through the sidebar: it is indexed and becomes searchable
        upload = ARTIFACTS / "乡村振兴报告.txt"
        upload.write_text("乡村振兴工作报告\n\n来源：测试\n\n一、总体情况\n今年以来，我们扎实推进乡村振兴，"
                          "一是发展特色产业，二是改善人居环境，三是加强基层治理。", encoding="utf-8")
        page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(upload))
        page.get_by_role("button", name="添加并建立索引").click()
        page.get_by_text("文档 3", exact=False).first.wait_for(timeout=60000)
        page.get_by_role("button", name="← 返回搜索结果").click()
        box = page.get_by_placeholder("输入问题，按回车搜索", exact=False)
        box.fill("乡村振兴 改善人居环境")
        box.press("Enter")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.kb-card')].some(c => c.innerText.includes('二是改善人居环境'))",
            timeout=30000)
        page.screenshot(path=str(ARTIFACTS / "after-upload.png"), full_page=False)
        browser.close()


def test_document_markup_never_reaches_the_network(server):
    """Titles, metadata and body of a hostile document are shown as text: the browser
    requests nothing outside the page's own server, on the results or the document view."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400}, locale="zh-CN")
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server + "/?q=陷阱文档 外部请求 检验转义", wait_until="domcontentloaded")
        card = page.locator(".kb-card", has_text="陷阱文档").first
        card.wait_for(timeout=30000)
        assert "<img src=http://example.org/body.png>" in card.inner_text()
        from kb.read.documents import doc_id_for

        page.goto(server + "/?doc=" + doc_id_for("hostile.txt"), wait_until="domcontentloaded")
        page.locator(".kb-title").first.wait_for(timeout=30000)
        page.wait_for_timeout(1000)
        assert page.locator(".kb-title").first.inner_text() == "![x](http://example.org/title.png)"
        assert "[官网](http://example.org/source)" in page.locator(".kb-doc-meta").inner_text()
        page.screenshot(path=str(ARTIFACTS / "hostile-document.png"), full_page=False)
        browser.close()
    outside = [u for u in requested if not u.startswith(server) and not u.startswith("data:")]
    assert outside == [], outside


def test_filters_live_in_the_url_and_a_shared_link_restores_them(server):
    from urllib.parse import parse_qs, urlparse

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200}, locale="zh-CN")
        page.goto(server + "/?q=服务理念&source=百度文库", wait_until="domcontentloaded")  # a shared filtered link
        page.locator(".kb-card").first.wait_for(timeout=30000)
        shown = page.locator(".kb-card").all_inner_texts()
        assert shown and all("来源 百度文库" in t for t in shown)  # the other source's document is left out
        sidebar = page.locator('[data-testid="stSidebar"]')
        # the panel shows it (waited for: the sidebar may still be drawing when the first card is there)
        sidebar.locator('[data-testid="stMultiSelect"]').filter(has_text="来源").filter(
            has_text="百度文库").first.wait_for(timeout=30000)
        after = sidebar.get_by_label("从（日期）")
        after.fill("2030-01-01")
        after.press("Enter")
        page.get_by_text("没有符合筛选条件的文档", exact=False).wait_for(timeout=30000)
        assert page.locator(".kb-card").count() == 0
        state = parse_qs(urlparse(page.url).query)
        assert state["after"] == ["2030-01-01"] and state["source"] == ["百度文库"] and state["q"] == ["服务理念"]
        page.screenshot(path=str(ARTIFACTS / "filtered.png"), full_page=False)
        browser.close()


def test_the_full_document_opens_at_the_passage_chosen(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page.goto(server + "/?q=坚持狠抓落实 争做求真务实的表率 常怀忧党之心", wait_until="domcontentloaded")
        card = page.locator(".kb-card", has_text="求真务实").first
        card.wait_for(timeout=30000)
        page.get_by_role("button", name="查看全文").first.click()
        mark = page.locator("mark.kb-focus-inline").first
        mark.wait_for(timeout=30000)
        page.wait_for_function(  # the last section of the speech, far below the top: scrolled into view
            "() => { const m = window.document.querySelector('mark.kb-focus-inline');"
            " const r = m && m.getBoundingClientRect(); return r && r.top >= 0 && r.top < window.innerHeight; }",
            timeout=15000)
        scrolled = page.evaluate("() => Math.max(window.scrollY, ...Array.from(document.querySelectorAll('*'),"
                                 " e => e.scrollTop))")
        assert scrolled > 300  # the passage was below the first screen: the page moved to it
        page.screenshot(path=str(ARTIFACTS / "document-at-passage.png"), full_page=False)
        browser.close()
