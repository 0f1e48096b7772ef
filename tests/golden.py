"""Golden files: expected outputs kept as files, reviewed in diffs.

    python -m tests.golden          # rewrite every golden file from the current code

Citations: one file per case, every style and export in it (tests/golden/citations/).
Splitter: one input document -> its passages with heading paths (tests/golden/splitting/).
OCR paragraphs: a page's OCR lines (recorded once from real scans of rendered text:
``python -m tests.golden --record-ocr``) -> the page text kb.read.ocr.rejoin makes (tests/golden/ocr/).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from kb.present.cite import EXPORTS, STYLES, Reference, cite, export

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
ACCESSED = dt.date(2026, 11, 28)  # the citing date of online documents, fixed for the files

CITATION_CASES = {
    "full": Reference(title="对生活失去信心的说说:组工干部学习贯彻“七一”讲话精神要争做四个表率", author="董清河",
                      author_position="中共河北省蔚县县委常委、组织部长", publisher="百度文库", date="2024-07-11",
                      sections=("二、坚持以人为本,争做热情服务的表率", "一要树立全新的服务理念"),
                      path="000_47dd060bf871eea8.txt", doc="4ef17b4da2ce"),
    "no_author": Reference(title="关于进一步做好基层减负工作的通知", publisher="中国政府网", date="2025-03-02",
                           sections=("三、工作要求",), path="notice.txt", doc="a1b2c3d4e5f6"),
    "no_date": Reference(title="乡村振兴工作报告", author="李明", publisher="县农业农村局", path="report.docx",
                         doc="0f0f0f0f0f0f"),
    "url": Reference(title="数字政府建设的实践与思考", author="王芳", publisher="人民网", date="2023-10-08",
                     url="http://theory.people.com.cn/n1/2023/1008/c40531-40090000.html",
                     sections=("二、主要做法",), path="web/digital.html", doc="deadbeef0001"),
    "url_no_author_no_date": Reference(title="关于印发《办法》的通知", url="https://www.gov.cn/zhengce/2024/content_1.htm",
                                       path="web/notice.html", doc="deadbeef0002"),
    "title_only": Reference(title="会议纪要", path="minutes.txt", doc="cafe00000001"),
    "pdf_pages": Reference(title="关于进一步做好基层减负工作的通知", publisher="中国政府网", date="2025-03-02",
                           sections=("三、工作要求",), path="scans/notice.pdf", doc="a1b2c3d4e5f7", place="第3–4页"),
    "slide": Reference(title="年度工作总结", sections=("第5张幻灯片：下一步打算",), path="deck.pptx",
                       doc="a1b2c3d4e5f8", place="第5张幻灯片"),
    "sheet_rows": Reference(title="预算", sections=("工作表：道路",), path="budget.xlsx", doc="a1b2c3d4e5f9",
                            place="第12–20行"),
}


def citation_text(ref: Reference) -> str:
    parts = [f"[{style}]\n{cite(ref, style, accessed=ACCESSED)}\n" for style in STYLES]
    parts += [f"[{fmt}]\n{export([ref], fmt, accessed=ACCESSED)}" for fmt in EXPORTS]
    return "\n".join(parts)


SPLITTING_INPUTS = GOLDEN / "splitting"


def split_json(path: Path) -> str:
    from kb.read.documents import read_document
    from kb.split.passages import split_document

    doc = read_document(path, path.parent)
    passages = [{"kind": p.kind, "heading_path": p.heading_path, "text": p.text, "parent": p.parent}
                for p in split_document(doc)]
    return json.dumps({"title": doc.title, "meta": doc.meta, "passages": passages}, ensure_ascii=False, indent=1) + "\n"


OCR_INPUTS = GOLDEN / "ocr"

# Pages recorded for the OCR golden files: name -> render_pages arguments. The texts are
# the sample speech (corpus/) and a notice written for these tests.
NOTICE = [
    "各乡镇人民政府，县直各有关单位：",
    "为深入贯彻落实上级关于整治形式主义为基层减负的部署要求，切实把基层干部从繁杂事务中解脱出来，现就有关事项通知如下。",
    "一、精简文件会议",
    "严格控制发文数量和会议规模。一是能合并的会议坚决合并，能套开的会议尽量套开；二是没有实质内容的文件一律不发；"
    "三是提倡开短会、讲短话，会议时间一般不超过一个半小时。",
    "二、规范督查检查",
    "各单位要统筹安排督查检查考核事项，原则上每年集中开展一次，不得层层加码。",
    "三、工作要求",
    "各单位主要负责同志要亲自抓，分管负责同志具体抓，确保各项措施落到实处。执行中遇到的问题，请及时报县委办公室。",
]


def ocr_pages() -> dict[str, dict]:
    from .scans import render_pages

    speech = (HERE.parent / "corpus").glob("*.txt")
    lines = [ln.strip() for ln in next(iter(sorted(speech))).read_text(encoding="utf-8").splitlines() if ln.strip()]
    out = {}
    pages, _ = render_pages(lines[1:16], title=lines[0][:24])
    out["speech_page1"] = pages[0]
    pages, _ = render_pages(NOTICE, title="关于进一步做好基层减负工作的通知", indent=False)
    out["notice_no_indent"] = pages[0]
    return out


def record_ocr() -> list[Path]:
    """Run the real OCR on the rendered pages and keep its lines as golden inputs."""
    from kb.read.ocr import recognize

    OCR_INPUTS.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in ocr_pages().items():
        lines = recognize(image)
        data = {"height": image.size[1], "width": image.size[0],
                "lines": [[round(ln.x0, 1), round(ln.y0, 1), round(ln.x1, 1), round(ln.y1, 1), ln.text,
                           round(ln.score, 3)] for ln in lines]}
        target = OCR_INPUTS / f"{name}.lines.json"
        target.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        written.append(target)
    return written


def rejoined(path: Path) -> str:
    from kb.read.ocr import Line, rejoin

    data = json.loads(path.read_text(encoding="utf-8"))
    return rejoin([Line(*v) for v in data["lines"]], data["height"]) + "\n"


def write_all() -> list[Path]:
    written = []
    (GOLDEN / "citations").mkdir(parents=True, exist_ok=True)
    for name, ref in CITATION_CASES.items():
        target = GOLDEN / "citations" / f"{name}.txt"
        target.write_text(citation_text(ref), encoding="utf-8")
        written.append(target)
    for source in sorted(SPLITTING_INPUTS.glob("*.txt")) + sorted(SPLITTING_INPUTS.glob("*.md")):
        target = source.with_suffix(source.suffix + ".json")
        target.write_text(split_json(source), encoding="utf-8")
        written.append(target)
    for source in sorted(OCR_INPUTS.glob("*.lines.json")):
        target = source.with_name(source.name.replace(".lines.json", ".txt"))
        target.write_text(rejoined(source), encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    import sys

    if "--record-ocr" in sys.argv:
        for path in record_ocr():
            print(path.relative_to(HERE.parent))
    for path in write_all():
        print(path.relative_to(HERE.parent))
