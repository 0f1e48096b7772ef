"""Scanned pages made in-process: known Chinese text rendered to A4 page images with a
CJK font (tests, golden OCR inputs and benchmarks/ocr.py use the same pages).

``render_pages(paragraphs)`` lays paragraphs out like a printed document (title centred,
first lines indented two characters, a page number at the foot) and returns the page
images and, per page, the lines drawn on it: the ground truth of OCR accuracy.
"""

from __future__ import annotations

import io
from pathlib import Path

FONTS = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
         "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/arphic/uming.ttc")


def cjk_font() -> str | None:
    """A font with Chinese glyphs on this machine, or None."""
    for path in FONTS:
        if Path(path).is_file():
            return path
    try:
        import subprocess

        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            path = line.split(":")[0].strip()
            if path:
                return path
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def render_pages(paragraphs: list[str], dpi: int = 150, pt: float = 12, title: str | None = None,
                 indent: bool = True, page_numbers: bool = True, max_pages: int = 50):
    """``(images, lines_per_page)``: A4 greyscale pages at ``dpi`` with the paragraphs
    laid out (wrapped by width), at most ``max_pages``."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = cjk_font()
    if font_path is None:
        raise RuntimeError("no CJK font (install fonts-wqy-zenhei)")
    width, height = int(8.27 * dpi), int(11.69 * dpi)
    px = int(pt * dpi / 72)
    font = ImageFont.truetype(font_path, px)
    big = ImageFont.truetype(font_path, int(px * 1.5))
    margin = int(dpi * 1.0)
    text_width = width - 2 * margin
    pages, truth = [], []
    page = draw = None
    y = 0
    lines: list[str] = []

    def new_page():
        nonlocal page, draw, y, lines
        if page is not None:
            finish()
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        y = margin
        lines = []

    def finish():
        if page_numbers:
            label = f"- {len(pages) + 1} -"
            draw.text(((width - font.getlength(label)) / 2, height - margin * 0.6), label, font=font, fill=0)
        pages.append(page)
        truth.append(lines)

    new_page()
    if title:
        w = big.getlength(title)
        draw.text(((width - w) / 2, y), title, font=big, fill=0)
        lines.append(title)
        y += int(px * 3)
    for para in paragraphs:
        para = " ".join(para.split())
        wrapped: list[tuple[int, str]] = []
        first_indent = 2 * px if indent else 0
        cur, ind = "", first_indent
        for ch in para:
            if font.getlength(cur + ch) > text_width - ind:
                wrapped.append((ind, cur))
                cur, ind = ch, 0
            else:
                cur += ch
        if cur:
            wrapped.append((ind, cur))
        for ind, text in wrapped:
            if y + px * 1.6 > height - margin:
                if len(pages) + 1 >= max_pages:
                    finish()
                    return pages, truth
                new_page()
            draw.text((margin + ind, y), text, font=font, fill=0)
            lines.append(text)
            y += int(px * 1.6)
        y += int(px * (0.4 if indent else 1.2))
    finish()
    return pages, truth


def degrade(image, seed: int = 0, angle: float = 1.0, sigma: float = 16.0, blur: float = 0.6):
    """A photocopy-like version: slightly rotated, noisy and blurred."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    im = image.rotate(angle, fillcolor=255, resample=Image.BICUBIC)
    a = np.asarray(im).astype(np.float32) + rng.normal(0, sigma, im.size[::-1])
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))


def pdf_of(images, dpi: int = 150) -> bytes:
    """Page images as an image-only PDF (a scan: no text layer)."""
    buf = io.BytesIO()
    rgb = [im.convert("RGB") for im in images]
    rgb[0].save(buf, "PDF", save_all=True, append_images=rgb[1:], resolution=dpi)
    return buf.getvalue()


def png_of(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
