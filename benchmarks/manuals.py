"""Build the real-documents benchmark library from Chinese manuals that Debian packages ship.

    python benchmarks/manuals.py OUT        # copies/converts into OUT (a new folder)

Needs the packages (``apt-get install debian-faq-zh-cn maint-guide-zh-cn debian-handbook
gimp-help-zh-cn pandoc``); files of a package that is absent are skipped with a line on stderr.
What it makes, every file as the package ships it unless said:

- the Debian New Maintainers' Guide: its HTML chapters, its PDF (with an outline), its plain text
  (hard-wrapped), and an EPUB made from the HTML by pandoc, re-zipped under a sub-folder
  (``book/META-INF/container.xml``);
- the Debian FAQ: HTML chapters, plain text, PDF;
- Debian Handbook chapters (HTML) and a DOCX of one made by pandoc;
- GIMP help pages (HTML), two icons and two screenshots (PNG).

Prints one JSON line: the files written per format. Nothing of the manuals is committed.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MAINT = Path("/usr/share/doc/maint-guide-zh-cn")
FAQ = Path("/usr/share/doc/debian/FAQ")
HANDBOOK = Path("/usr/share/doc/debian-handbook/html/zh-CN")
GIMP = Path("/usr/share/gimp/2.0/help/zh_CN")

HANDBOOK_CHAPTERS = ["apt.html", "packaging-system.html", "sect.apt-get.html", "sect.apt-cache.html",
                     "sect.dist-upgrade.html", "sect.creating-accounts.html", "sect.backup.html"]
FAQ_CHAPTERS = ["basic-defs", "pkg-basics", "pkgtools", "ftparchives", "uptodate", "kernel", "customizing",
                "support"]
MAINT_ORDER = ["start", "first", "modify", "dreq", "dother", "build", "checkit", "upload", "update", "advanced"]
GIMP_PAGES = ["gimp-concepts-main-windows.html", "gimp-concepts-docks.html", "gimp-tool-crop.html",
              "gimp-tool-rect-select.html", "gimp-tool-text.html", "gimp-image-scale.html"]
GIMP_ICONS = ["images/toolbox/stock-tool-crop-22.png", "images/toolbox/stock-tool-text-22.png"]
GIMP_SHOTS = ["images/toolbox/crop-dialog.png", "images/gimp-splash.png"]


def _copy(src: Path, dst: Path, made: dict[str, int]) -> None:
    if not src.is_file():
        print(f"skipped (not installed): {src}", file=sys.stderr)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".gz":
        dst.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copyfile(src, dst)
    made[dst.suffix.lstrip(".")] = made.get(dst.suffix.lstrip("."), 0) + 1


def _under_subfolder(epub: bytes, folder: str) -> bytes:
    """The same EPUB with every member under ``folder/`` (as some packages ship one)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(epub)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "mimetype":
                dst.writestr("mimetype", data, zipfile.ZIP_STORED)
            else:
                dst.writestr(f"{folder}/{info.filename}", data)
    return out.getvalue()


def build(out: Path) -> dict[str, int]:
    made: dict[str, int] = {}
    maint_html = sorted((MAINT / "html").glob("*.zh-cn.html"))
    for f in maint_html:
        _copy(f, out / "maint-guide" / "html" / f.name, made)
    _copy(MAINT / "maint-guide.zh-cn.pdf", out / "maint-guide" / "maint-guide.zh-cn.pdf", made)
    _copy(MAINT / "maint-guide.zh-cn.txt.gz", out / "maint-guide" / "maint-guide.zh-cn.txt", made)
    for name in FAQ_CHAPTERS:
        _copy(FAQ / "zh-cn" / f"{name}.zh-cn.html", out / "debian-faq" / "html" / f"{name}.zh-cn.html", made)
    _copy(FAQ / "debian-faq.zh-cn.txt.gz", out / "debian-faq" / "debian-faq.zh-cn.txt", made)
    _copy(FAQ / "debian-faq.zh-cn.pdf.gz", out / "debian-faq" / "debian-faq.zh-cn.pdf", made)
    for name in HANDBOOK_CHAPTERS:
        _copy(HANDBOOK / name, out / "debian-handbook" / name, made)
    for name in GIMP_PAGES:
        _copy(GIMP / name, out / "gimp" / name, made)
    for name in GIMP_ICONS + GIMP_SHOTS:
        _copy(GIMP / name, out / "gimp" / "images" / Path(name).name, made)
    pandoc = shutil.which("pandoc")
    chapters = [f for f in (MAINT / "html" / f"{c}.zh-cn.html" for c in MAINT_ORDER) if f.is_file()]
    if pandoc and chapters:
        with tempfile.TemporaryDirectory() as tmp:
            epub = Path(tmp) / "maint-guide.epub"
            subprocess.run([pandoc, "-o", str(epub), "--metadata", "title=Debian 新维护者手册",
                            *map(str, chapters)], check=True, stderr=subprocess.DEVNULL)
            (out / "maint-guide" / "maint-guide.zh-cn.epub").write_bytes(_under_subfolder(epub.read_bytes(), "book"))
            made["epub"] = made.get("epub", 0) + 1
        if (HANDBOOK / "apt.html").is_file():
            subprocess.run([pandoc, "-o", str(out / "debian-handbook" / "apt.docx"), str(HANDBOOK / "apt.html")],
                           check=True, stderr=subprocess.DEVNULL)
            made["docx"] = made.get("docx", 0) + 1
    else:
        print("skipped the EPUB and DOCX: pandoc is not installed", file=sys.stderr)
    return made


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/manuals.py OUT")
    out = Path(sys.argv[1])
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out}: exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"library": str(out), "files": build(out)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
