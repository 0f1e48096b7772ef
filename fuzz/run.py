"""Run every fuzz target for a bounded time (`make fuzz`, FUZZ_SECONDS each).

Seeds are made here (a real document of each format from the sample corpus), so the
fuzzer starts from valid files instead of random bytes. Crashes land in fuzz/crashes/.
Prints one JSON object: per target, runs and whether it crashed.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("decode", "txt", "md", "html", "docx", "pdf", "pptx", "xlsx", "epub", "png", "jpg", "tiff", "split",
           "query")


def seeds(folder: Path) -> dict[str, Path]:
    text = next((ROOT / "corpus").glob("*.txt")).read_text(encoding="utf-8")
    short = text[:1500]
    out = {}
    for name in TARGETS:
        d = folder / name
        d.mkdir(parents=True)
        out[name] = d
    for name in ("decode", "txt", "split"):
        (out[name] / "utf8").write_bytes(short.encode("utf-8"))
        (out[name] / "gbk").write_bytes(short.encode("gb18030"))
        (out[name] / "utf16be").write_bytes(short.encode("utf-16-be"))
    (out["md"] / "md").write_bytes(("# 标题\n\n" + short).encode("utf-8"))
    (out["html"] / "html").write_bytes(
        f"<html><head><title>标题</title></head><body><h1>一、总则</h1><p>{short}</p></body></html>".encode())
    (out["query"] / "q").write_bytes("组工干部如何创新工作方法".encode())
    import docx

    d = docx.Document()
    d.add_heading("一、总则", level=1)
    for para in short.split("\n")[:10]:
        d.add_paragraph(para)
    buf = io.BytesIO()
    d.save(buf)
    (out["docx"] / "docx").write_bytes(buf.getvalue())
    sys.path.insert(0, str(ROOT))
    from tests.test_formats import epub_bytes, pptx_bytes, xlsx_bytes

    (out["pptx"] / "pptx").write_bytes(pptx_bytes([("标题", short.split("\n")[:5], "备注")]))
    (out["xlsx"] / "xlsx").write_bytes(xlsx_bytes({"表一": [["项目", "金额"], ["道路", 1], ["环境", 2]]}))
    (out["epub"] / "epub").write_bytes(epub_bytes([("第一章", short[:300])]))
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(200, 200)
    buf = io.BytesIO()
    w.write(buf)
    (out["pdf"] / "pdf").write_bytes(buf.getvalue())
    from PIL import Image, ImageDraw

    im = Image.new("L", (160, 48), 255)  # small: the fuzzer runs OCR on whatever decodes
    ImageDraw.Draw(im).text((8, 16), "kb 2026", fill=0)
    for name, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("tiff", "TIFF")):
        buf = io.BytesIO()
        im.save(buf, fmt)
        (out[name] / name).write_bytes(buf.getvalue())
    (out["pdf"] / "scan").write_bytes(_scan_pdf(im))
    return out


def _scan_pdf(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PDF")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args()
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        seed_dirs = seeds(Path(tmp))
        for name in args.targets:
            cmd = [sys.executable, str(HERE / "targets.py"), name, f"-max_total_time={args.seconds}",
                   "-rss_limit_mb=4096", "-max_len=65536", f"-artifact_prefix={crashes}/{name}-",
                   str(seed_dirs[name])]
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
            runs = re.findall(r"#(\d+)\s", p.stderr)
            result[name] = {"runs": int(runs[-1]) if runs else 0, "crashed": p.returncode != 0}
            if p.returncode != 0:
                print(p.stderr[-3000:], file=sys.stderr)
            print(f"{name}: {result[name]}", file=sys.stderr)
    print(json.dumps(result))
    sys.exit(1 if any(r["crashed"] for r in result.values()) else 0)


if __name__ == "__main__":
    main()
