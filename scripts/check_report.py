#!/usr/bin/env python3
"""Render a study's report.html in headless Chromium and save a full-page screenshot.

    python scripts/check_report.py RUN_DIR/report.html --out shot.png [--width 1280]
    python scripts/check_report.py RUN_DIR/report.html --out first.png --first-screen

`--first-screen` saves only what a reader sees on opening the page in a 1280x800 window
(the report opens with the table of the paper's claims, which should fill it).

To check the report as a reader sees it: opened from disk (file://, no server), figures
loaded by their relative paths. Chromium's --screenshot captures the window only, so the
window is made tall (16000 px, doubled while the page is longer) and the blank space below
the page is cropped off (with Pillow, which matplotlib installs). Needs Debian's chromium
(`apt-get install -y chromium`) or --chromium PATH; exits 2 with a message without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIRST_SCREEN_HEIGHT = 800


def find_chromium(explicit: str | None) -> str | None:
    for name in ([explicit] if explicit else [os.environ.get("CHROMIUM"), *CANDIDATES]):
        if name and (found := shutil.which(name)):
            return found
    return None


def crop_blank_bottom(path: Path, margin: int = 24) -> tuple[int, int, bool]:
    """Crop the uniform rows at the bottom of the screenshot; (width, height, reached_end)
    where reached_end says the page filled the whole window (it may be cut off)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return 0, 0, False
    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box is None:
        return rgb.width, rgb.height, False
    bottom = min(rgb.height, box[3] + margin)
    reached_end = box[3] >= rgb.height - 2
    if bottom < rgb.height:
        rgb.crop((0, 0, rgb.width, bottom)).save(path)
    return rgb.width, bottom, reached_end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the report.html to render")
    parser.add_argument("--out", type=Path, required=True, help="screenshot PNG to write")
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--height", type=int, default=16000,
                        help="first window height in px (default 16000); doubled while the "
                        "page is longer, up to --max-height")
    parser.add_argument("--max-height", type=int, default=64000,
                        help="largest window height in px (default 64000)")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds (default 180)")
    parser.add_argument("--first-screen", action="store_true",
                        help="only the first screen: a window of --width x 800 px")
    args = parser.parse_args(argv)
    if args.first_screen:
        args.height = args.max_height = FIRST_SCREEN_HEIGHT

    page = args.html.resolve()
    if not page.is_file():
        print(f"check_report: no such file: {page}", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_report: Chromium not found (looked for "
              f"{', '.join(CANDIDATES)}); install it with `apt-get install -y chromium` "
              "(Debian) or pass --chromium PATH", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if not out.parent.is_dir():
        print(f"check_report: output directory does not exist: {out.parent}", file=sys.stderr)
        return 2
    height = args.height
    while True:
        status = screenshot(chromium, page, out, args.width, height, args.timeout)
        if status:
            return status
        width, cropped, reached_end = crop_blank_bottom(out)
        if not reached_end or height * 2 > args.max_height:
            break
        height *= 2  # the page is longer than the window: try again, taller
    print(f"{out}: {width}x{cropped} px")
    if reached_end and not args.first_screen:
        print(f"check_report: the page fills the whole {height} px window and may be cut "
              "off; pass a larger --max-height", file=sys.stderr)
    return 0


def screenshot(chromium: str, page: Path, out: Path, width: int, height: int,
               timeout: float) -> int:
    """Run Chromium once; 0 when `out` was written, else 1 with a message."""
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-report-") as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
            "--virtual-time-budget=10000", f"--user-data-dir={profile}",
            f"--screenshot={out}", f"--window-size={width},{height}", page.as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired:
            print(f"check_report: Chromium did not finish within {timeout:g} s",
                  file=sys.stderr)
            return 1
    if result.returncode != 0 or not out.is_file():
        print(f"check_report: Chromium failed (exit {result.returncode}):\n"
              f"{result.stderr[-3000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
