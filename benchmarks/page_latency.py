"""Time from pressing Enter to the first result card, in a real browser (Debian chromium
driven by Playwright) against `streamlit run app.py` on the sample knowledge base.

    python benchmarks/page_latency.py [--runs 10]

Also reports the server-side search time the page prints ("N 毫秒"). The index is built
from corpus/ with the default model into a temporary folder. Prints one JSON object as
its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
QUESTIONS = ["组工干部为什么要站在学习贯彻的最前列", "如何转变服务理念", "建设学习型政党有什么要求", "怎样抓落实",
             "以理念创新带动工作创新", "常怀忧党之心", "组织工作的机制体制", "服务对象的理解和支持",
             "学用结合求提高", "来源和发布时间"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "kb", "index", str(ROOT / "corpus"), "--index", tmp, "-q"],
                       check=True, capture_output=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "kb.serve.streamlit_server", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"],
            cwd=ROOT, env={**os.environ, "KB_INDEX": tmp}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            browser_ms, server_ms = [], []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
                page = browser.new_page()
                page.goto(url)
                box = page.get_by_placeholder("输入问题，按回车搜索", exact=False)
                box.wait_for(timeout=60000)
                for i in range(args.runs + 1):  # the first run warms the server's caches
                    q = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" {i}")
                    box.fill(q)
                    t0 = time.perf_counter()
                    box.press("Enter")
                    page.wait_for_function(
                        "q => [...document.querySelectorAll('.kb-summary')].some(e => e.dataset.q === q)"
                        " && document.querySelector('.kb-card')", arg=q, timeout=30000)
                    elapsed = (time.perf_counter() - t0) * 1000
                    caption = page.locator(".kb-summary").first.inner_text()
                    if i > 0:
                        browser_ms.append(elapsed)
                        server_ms.append(float(re.search(r"(\d+) 毫秒", caption).group(1)))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)

    def pct(a):
        a = np.asarray(a)
        return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1)}

    print(json.dumps({"enter_to_results": pct(browser_ms), "server_search": pct(server_ms), "runs": args.runs}))


if __name__ == "__main__":
    main()
