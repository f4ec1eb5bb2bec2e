"""The report in a real browser: headless Chromium opens it from disk, renders it, and the page's own check
(`data-render-check` on <body>) reports no broken image and no empty table. A control page with a broken
image and an empty table proves the check can fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_helpers import shared_report

from cmrprior.report.html import Section, render_page

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]


def chromium(page: Path, tmp: Path, *extra: str) -> str:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def render_check(page: Path, tmp: Path) -> dict:
    dom = chromium(page, tmp, "--dump-dom")
    m = re.search(r'<body[^>]*data-render-check="([^"]+)"', dom)
    assert m, "the page's render check did not run"
    return json.loads(m.group(1).replace("&quot;", '"'))


def screenshot(page: Path, png: Path, tmp: Path) -> Path:
    chromium(page, tmp, f"--screenshot={png}", "--window-size=1400,4000", "--hide-scrollbars")
    return png


def test_report_renders_in_chromium(tmp_path):
    page = shared_report()
    check = render_check(page, tmp_path)
    assert check["images"] >= 6 and check["broken_images"] == 0, check
    assert check["tables"] >= 8 and check["empty_tables"] == 0, check
    png = screenshot(page, tmp_path / "report.png", tmp_path)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_render_check_detects_broken_image_and_empty_table(tmp_path):
    body = ('<img src="data:image/png;base64,AAAA" alt="broken"><table><thead><tr><th>h</th></tr></thead>'
            "<tbody></tbody></table><table><tbody><tr><td>1</td></tr></tbody></table>")
    page = tmp_path / "control.html"
    page.write_text(render_page("control", "", [Section("s", "S", body)]))
    check = render_check(page, tmp_path)
    assert check == {"images": 1, "broken_images": 1, "tables": 2, "empty_tables": 1}
