"""Load on `kb serve` over loopback, next to the same searcher called in a loop in one process.

    python benchmarks/api_load.py --seconds 60                  # demo index + 100k synthetic, c = 1, 8, 32
    python benchmarks/api_load.py --indexes demo --seconds 20 --leak-requests 10000
    python benchmarks/api_load.py --while-indexing --seconds 30 # queries while `kb index` embeds
    python benchmarks/api_load.py --libraries --seconds 30      # 32 clients over two libraries with keys

For each index and concurrency: QPS, p50/p95/p99 ms, errors; a generation swap is published
in the middle of every run (a new generation made by copying the live one and switching
CURRENT, exactly what readers see when `kb index` publishes). The reference is
`search_response` called in a loop in this process for the same time (framework overhead =
1 - server QPS / loop QPS, both at concurrency 1). Memory: the server's RSS before and after
N requests. --while-indexing: sequential queries against a server on the demo index while
a `kb index` embeds documents in another process, with the encoder threads pinned (kb serve's
default) and unpinned (OpenMP's defaults). Clients run in this process (threads with
keep-alive connections), so on 2 cores they share the CPU with the server. Prints one JSON
object as its last line. --libraries: 32 clients, half with a key of one library and half with a
key of another, each asking its own library (`/libraries/NAME/search`), against the same 32 clients
on one library without keys (errors, and the throughput ratio).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The in-process reference runs the encoder as `kb serve` does (one thread, sleeping when idle),
# so that the ratio measures the framework, not a different thread setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import synthetic  # noqa: E402

from kb.index import update_index  # noqa: E402
from kb.search.searcher import Searcher, search_response  # noqa: E402
from kb.store.local.layout import IndexDir  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, pinned: bool = True, libraries: dict[str, Path] | None = None,
                 home: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    if home is not None:
        env["KB_HOME"] = str(home)
    if libraries:
        cmd = [sys.executable, "-m", "kb", "serve", "--port", str(port), "--require-key",
               *[a for name, ix in libraries.items() for a in ("--library", f"{name}={ix}")]]
    elif pinned:  # what `kb serve` does
        cmd = [sys.executable, "-m", "kb", "serve", "--port", str(port), "--index", str(index)]
    else:  # the same app, OpenMP left at its defaults (all cores, spinning waits)
        cmd = [sys.executable, "-c", "import sys, uvicorn; from kb.serve.api import create_app; "
               f"uvicorn.run(create_app(sys.argv[1]), host='127.0.0.1', port={port}, log_level='warning')",
               str(index)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")  # needs no key
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("kb serve did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def swap_generation(index: Path) -> None:
    """Publish a copy of the live generation as a new one (what readers see on a publish)."""
    idx = IndexDir(index)
    live = idx.current()
    tmp = idx.next_generation().with_suffix(".tmp")
    shutil.copytree(live, tmp)
    idx.publish(tmp)
    idx.clean(keep_previous=live)


def load(port: int, questions: list[str], concurrency: int, seconds: float, index: Path | None,
         routes: list[tuple[str, dict[str, str]]] = (("", {}),)) -> dict:
    """``concurrency`` clients for ``seconds``; client n asks ``routes[n % len(routes)]``: a path
    prefix (``/libraries/NAME``) and its headers (its key)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        prefix, headers = routes[n % len(routes)]
        i = n
        mine, bad = [], []
        while time.perf_counter() < stop:
            q = questions[i % len(questions)]
            i += concurrency
            t0 = time.perf_counter()
            try:
                conn.request("GET", prefix + "/search?k=10&q=" + urllib.parse.quote(q), headers=headers)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    bad.append(f"{r.status} {body[:100]!r}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                bad.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if index is not None:
        time.sleep(seconds / 2)
        swap_generation(index)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies)
    return {"qps": round(len(lat) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "requests": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "swap_mid_run": index is not None}


def in_process(index: Path, questions: list[str], seconds: float) -> dict:
    s = Searcher.load(index)
    s.warm()
    n, stop, t0 = 0, time.perf_counter() + seconds, time.perf_counter()
    while time.perf_counter() < stop:
        search_response(s, questions[n % len(questions)], k=10)
        n += 1
    return {"qps": round(n / (time.perf_counter() - t0), 1)}


def demo_index(tmp: Path) -> Path:
    corpus = tmp / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    update_index(corpus, tmp / "demo-index", progress=False, warn=lambda m: None)
    return tmp / "demo-index"


def leak(port: int, pid: int, questions: list[str], n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(500):  # warm: caches filled
        conn.request("GET", "/search?q=" + urllib.parse.quote(questions[i % len(questions)]))
        conn.getresponse().read()
    before = rss_mb(pid)
    for i in range(n):
        conn.request("GET", "/search?q=" + urllib.parse.quote(questions[i % len(questions)]))
        conn.getresponse().read()
    after = rss_mb(pid)
    return {"requests": n, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "growth_pct": round(100 * (after - before) / before, 2)}


def while_indexing(demo: Path, questions: list[str], seconds: float, tmp: Path) -> dict:
    docs = tmp / "to-index"
    docs.mkdir()
    eval_passages = ROOT.parent / "shared" / "eval" / "cmrc2018_trial" / "passages.jsonl"
    lines = eval_passages.read_text(encoding="utf-8").splitlines()[:400] if eval_passages.exists() else []
    for i, line in enumerate(lines):
        p = json.loads(line)
        (docs / f"p{i:04d}.txt").write_text(p.get("title", "") + "\n\n" + p["text"], encoding="utf-8")
    out = {}
    for label, pinned in (("unpinned", False), ("pinned", True)):
        proc, port = start_server(demo, pinned=pinned)
        quiet = load(port, questions, 1, seconds / 2, None)
        shutil.rmtree(tmp / "busy-index", ignore_errors=True)
        indexer = subprocess.Popen([sys.executable, "-m", "kb", "index", str(docs), "--index",
                                    str(tmp / "busy-index"), "-q"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(5)  # the indexer is loading and embedding
        busy = load(port, questions, 1, seconds, None)
        indexer.kill()
        indexer.wait()
        proc.terminate()
        proc.wait()
        out[label] = {"idle": {k: quiet[k] for k in ("p50_ms", "p95_ms")},
                      "while_indexing": {k: busy[k] for k in ("p50_ms", "p95_ms", "errors")}}
    return out


def libraries_with_keys(demo: Path, questions: list[str], seconds: float, tmp: Path, concurrency: int = 32) -> dict:
    """32 clients over two libraries with scoped keys, against 32 on one library without keys."""
    from kb.serve.keys import KeyStore

    libs = {"hr": tmp / "lib-hr", "finance": tmp / "lib-finance"}
    for ix in libs.values():
        shutil.copytree(demo, ix)
    home = tmp / "kbhome"
    store = KeyStore(home)
    routes = [(f"/libraries/{name}", {"Authorization": f"Bearer {store.add(name + '-reader', name, 'read')}"})
              for name in libs]
    out = {}
    proc, port = start_server(demo)
    try:
        out["one_library_no_keys"] = load(port, questions, concurrency, seconds, None)
    finally:
        proc.terminate()
        proc.wait()
    proc, port = start_server(demo, libraries=libs, home=home)
    try:
        out["two_libraries_with_keys"] = load(port, questions, concurrency, seconds, None, routes)
    finally:
        proc.terminate()
        proc.wait()
    out["throughput_ratio"] = round(out["two_libraries_with_keys"]["qps"] / out["one_library_no_keys"]["qps"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--indexes", nargs="+", default=["demo", "100k"], choices=["demo", "100k"])
    ap.add_argument("--leak-requests", type=int, default=10_000)
    ap.add_argument("--while-indexing", action="store_true", help="Only the queries-while-indexing measurement.")
    ap.add_argument("--libraries", action="store_true", help="Only two libraries with keys against one without.")
    args = ap.parse_args()
    questions = synthetic.questions(2000)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        demo = demo_index(tmp)
        if args.while_indexing:
            result["while_indexing"] = while_indexing(demo, questions, args.seconds, tmp)
            print(json.dumps(result, ensure_ascii=False))
            return
        if args.libraries:
            result["libraries"] = libraries_with_keys(demo, questions, args.seconds, tmp)
            print(json.dumps(result, ensure_ascii=False))
            return
        for name in args.indexes:
            if name == "demo":
                index = demo
            else:
                src, _ = synthetic.ensure(100_000)
                index = tmp / "synth-100k"
                shutil.copytree(src, index)
            row: dict = {"in_process_loop": in_process(index, questions, min(args.seconds, 30))}
            proc, port = start_server(index)
            try:
                for c in args.concurrency:
                    row[f"c{c}"] = load(port, questions, c, args.seconds, index)
                    print(name, c, row[f"c{c}"], file=sys.stderr)
                row["server_vs_loop_qps"] = round(row["c1"]["qps"] / row["in_process_loop"]["qps"], 3) \
                    if "c1" in row else None
                if args.leak_requests:
                    row["memory"] = leak(port, proc.pid, questions, args.leak_requests)
                row["server_rss_mb"] = round(rss_mb(proc.pid), 1)
            finally:
                proc.terminate()
                proc.wait()
            result[name] = row
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
