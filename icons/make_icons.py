"""Draws the Latchkey key glyph and writes the app icons Tauri bundles.

Run from the repository root with Pillow installed: python3 icons/make_icons.py
The glyph is drawn once on a large canvas and scaled down, so every size comes
from the same shapes; ui/src/lib/KeyGlyph.svelte draws the same key as SVG.
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent
# Drawn at 4x the largest icon so downscaling antialiases the edges.
S = 4096
BG = (31, 59, 87, 255)
KEY = (242, 184, 75, 255)


def u(v: float) -> int:
    """Converts a coordinate on a 1024 grid to the drawing canvas."""
    return round(v * S / 1024)


def glyph() -> Image.Image:
    img = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((u(48), u(48), u(976), u(976)), radius=u(208), fill=BG)
    cy = 512
    # Bow of the key; its hole is painted last, over the bow.
    d.ellipse((u(150), u(cy - 200), u(550), u(cy + 200)), fill=KEY)
    # Shaft and teeth.
    d.rounded_rectangle((u(500), u(cy - 58), u(872), u(cy + 58)), radius=u(30), fill=KEY)
    d.rounded_rectangle((u(736), u(cy), u(812), u(cy + 190)), radius=u(18), fill=KEY)
    d.rounded_rectangle((u(616), u(cy), u(684), u(cy + 140)), radius=u(18), fill=KEY)
    # The hole shows the background, not transparency, so it reads on any desktop.
    d.ellipse((u(262), u(cy - 88), u(438), u(cy + 88)), fill=BG)
    return img


def main() -> None:
    master = glyph()

    def sized(px: int) -> Image.Image:
        return master.resize((px, px), Image.Resampling.LANCZOS)

    for name, px in {
        "32x32.png": 32,
        "128x128.png": 128,
        "128x128@2x.png": 256,
        "icon.png": 512,
    }.items():
        sized(px).save(OUT / name, optimize=True)
    sized(256).save(OUT / "icon.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (256, 256)])
    sized(1024).save(OUT / "icon.icns")


if __name__ == "__main__":
    main()
