"""`kb index` on a hostile library folder, as issue 24's "Show" asks: a FIFO, a symlink to
/dev/zero, symlinks to /etc/shadow and /etc/passwd and to a file outside the folder, a file name
that is not UTF-8, a 100,000-level nested HTML page and a 19 MB text file, beside one ordinary
notice.

    python benchmarks/hostile.py [--text-mb 19] [--depth 100000] [--model hash:64]

The run must finish; its seconds and peak memory (the child's max RSS) are reported, and the
index is searched for what the outside files hold (nothing may come back). The hash embedder is
the default here so that the time is reading and splitting, not the encoder (a 19 MB text is
~60,000 passages: hours with the real model). Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_folder(folder: Path, text_mb: float, depth: int, outside: Path) -> dict:
    folder.mkdir(parents=True)
    (folder / "通知.txt").write_text("关于做好差旅费报销的通知\n\n各单位要严格执行差旅费报销制度。", encoding="utf-8")
    os.mkfifo(folder / "pipe.txt")
    os.symlink("/dev/zero", folder / "zero.txt")
    for name, target in (("shadow.txt", "/etc/shadow"), ("passwd.txt", "/etc/passwd"), ("secret.md", outside)):
        os.symlink(target, folder / name)
    os.makedirs(folder / "sub")
    os.symlink(outside.parent, folder / "sub" / "elsewhere")  # a folder link out of the library
    (folder / os.fsdecode(b"bad\xff\xfe.md")).write_text("# 坏名字\n\n文件名不是 UTF-8。", encoding="utf-8")
    (folder / "deep.html").write_text("<html><body>" + "<div>" * depth + "最深处的文字" + "</div>" * depth
                                      + "</body></html>", encoding="utf-8")
    line = "各地区各部门要认真贯彻落实党中央决策部署，扎实推进乡村振兴和城乡融合发展。"
    n = int(text_mb * 1024 * 1024 / len(line.encode("utf-8")))
    with open(folder / "big.txt", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(line + ("\n\n" if i % 8 == 7 else ""))
    return {"big_txt_bytes": (folder / "big.txt").stat().st_size, "html_depth": depth}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text-mb", type=float, default=19.0)
    ap.add_argument("--depth", type=int, default=100_000)
    ap.add_argument("--model", default="hash:64")
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kb-hostile-") as tmp:
        root = Path(tmp)
        outside = root / "outside" / "secret.md"
        outside.parent.mkdir()
        outside.write_text("外部机密 OUTSIDE-SECRET-7731", encoding="utf-8")
        facts = build_folder(root / "library", args.text_mb, args.depth, outside)
        t0 = time.time()
        run = subprocess.run([sys.executable, "-m", "kb", "index", str(root / "library"), "--index",
                              str(root / "index"), "--model", args.model, "-q"],
                             capture_output=True, text=True, timeout=args.timeout)
        seconds = time.time() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        leaks = {}
        for probe in ("root:", "OUTSIDE-SECRET-7731", "nologin"):
            found = subprocess.run([sys.executable, "-m", "kb", "search", probe, "--mode", "lexical", "--json",
                                    "--index", str(root / "index")], capture_output=True, text=True, timeout=600)
            hits = json.loads(found.stdout)["hits"] if found.returncode == 0 else []
            leaks[probe] = sum(probe in h["passage"]["text"] for h in hits)
        stats = subprocess.run([sys.executable, "-m", "kb", "stats", "--json", "--index", str(root / "index")],
                               capture_output=True, text=True, timeout=600)
        st = json.loads(stats.stdout) if stats.returncode == 0 else {}
        print(json.dumps({
            **facts, "exit_code": run.returncode, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb),
            "documents": st.get("documents"), "passages": st.get("passages"),
            "warnings": [ln for ln in run.stderr.splitlines() if ln.strip()][:20],
            "outside_text_in_index": leaks, "model": args.model,
        }, ensure_ascii=False))


if __name__ == "__main__":
    main()
