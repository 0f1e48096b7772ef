"""Golden files: expected outputs kept as files, reviewed in diffs.

    python -m tests.golden          # rewrite every golden file from the current code

Citations: one file per case, every style and export in it (tests/golden/citations/).
Splitter: one input document -> its passages with heading paths (tests/golden/splitting/).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from kb.cite import EXPORTS, STYLES, Reference, cite, export

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
ACCESSED = dt.date(2026, 11, 28)  # the citing date of online documents, fixed for the files

CITATION_CASES = {
    "full": Reference(title="对生活失去信心的说说:组工干部学习贯彻“七一”讲话精神要争做四个表率", author="董清河",
                      author_position="中共河北省蔚县县委常委、组织部长", publisher="百度文库", date="2024-07-11",
                      sections=("二、坚持以人为本,争做热情服务的表率", "一要树立全新的服务理念"),
                      path="000_47dd060bf871eea8.txt", key="4ef17b4da2ce"),
    "no_author": Reference(title="关于进一步做好基层减负工作的通知", publisher="中国政府网", date="2025-03-02",
                           sections=("三、工作要求",), path="notice.txt", key="a1b2c3d4e5f6"),
    "no_date": Reference(title="乡村振兴工作报告", author="李明", publisher="县农业农村局", path="report.docx",
                         key="0f0f0f0f0f0f"),
    "url": Reference(title="数字政府建设的实践与思考", author="王芳", publisher="人民网", date="2023-10-08",
                     url="http://theory.people.com.cn/n1/2023/1008/c40531-40090000.html",
                     sections=("二、主要做法",), path="web/digital.html", key="deadbeef0001"),
    "url_no_author_no_date": Reference(title="关于印发《办法》的通知", url="https://www.gov.cn/zhengce/2024/content_1.htm",
                                       path="web/notice.html", key="deadbeef0002"),
    "title_only": Reference(title="会议纪要", path="minutes.txt", key="cafe00000001"),
}


def citation_text(ref: Reference) -> str:
    parts = [f"[{style}]\n{cite(ref, style, accessed=ACCESSED)}\n" for style in STYLES]
    parts += [f"[{fmt}]\n{export([ref], fmt, accessed=ACCESSED)}" for fmt in EXPORTS]
    return "\n".join(parts)


SPLITTING_INPUTS = GOLDEN / "splitting"


def split_json(path: Path) -> str:
    from kb.documents import read_document
    from kb.splitting import split_document

    doc = read_document(path, path.parent)
    passages = [{"kind": p.kind, "heading_path": p.heading_path, "text": p.text, "parent": p.parent}
                for p in split_document(doc)]
    return json.dumps({"title": doc.title, "meta": doc.meta, "passages": passages}, ensure_ascii=False, indent=1) + "\n"


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
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path.relative_to(HERE.parent))
