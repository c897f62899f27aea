"""Headless Chromium for tests: render a report page and read back what a script in it found after rendering.

`scripts/setup.sh` installs the Debian package `chromium`. The page is loaded from a copy with `CHECK_SCRIPT` appended;
`chromium --headless=new --dump-dom` prints the DOM after the script ran, and the script's findings are read back
from the `<pre id="wd-check">` it adds.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # a self-contained page needs no network; nothing may be fetched

# Every citation link must point at an entry of the references list that carries the same number; no `[n]` may be
# left as plain text in the report's body; computed styles tell whether unsupported sentences are marked and the
# evidence pop-ups hidden until hovered.
CHECK_SCRIPT = """<script>(() => {
  const refs = document.getElementById('references');
  const cites = [...document.querySelectorAll('main a.cite[href]')];
  const bad = [];
  for (const a of cites) {
    const n = a.textContent.replace(/[\\[\\]]/g, '');
    const target = document.getElementById(a.getAttribute('href').slice(1));
    if (!target || !refs || !refs.contains(target) || target.dataset.n !== n) bad.push(a.textContent);
  }
  const unlinked = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (/\\[\\d+\\]/.test(node.textContent) && !node.parentElement.closest('a, #references, .box, footer, .pop'))
      unlinked.push(node.textContent);
  }
  const out = document.createElement('pre');
  out.id = 'wd-check';
  out.textContent = JSON.stringify({
    title: document.title, cites: cites.length, bad, unlinked,
    references: refs ? refs.querySelectorAll('li').length : 0,
    unsupported: [...document.querySelectorAll('main section .s.bad')].map(e => getComputedStyle(e).textDecorationLine),
    popups: [...document.querySelectorAll('main section .pop')].map(e => getComputedStyle(e).display),
    targets: cites.map(a => a.getAttribute('href')),
  });
  document.body.appendChild(out);
})();</script>"""


def binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        pytest.skip("headless Chromium is not installed: scripts/setup.sh installs the Debian package `chromium` "
                    "(apt-get install chromium, needs root); this machine could not")
    return found


def check_page(page: Path, work: Path) -> dict:
    """Render `page` (a copy with CHECK_SCRIPT) in headless Chromium; the script's findings as a dict."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / f"checked-{page.name}"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [binary(), *FLAGS, f"--user-data-dir={work / 'chromium-profile'}", "--dump-dom", copy.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="wd-check">(.*?)</pre>', result.stdout, re.S)
    assert m, f"chromium rendered no check (rc {result.returncode}): {result.stderr[-1500:]}"
    return json.loads(html.unescape(m.group(1)))
