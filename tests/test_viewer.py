"""The trajectory viewer renders WebDancer's released samples and our own records, inline and as a page."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from wdlib import viewer
from wdlib.trajectory import Trajectory, append_jsonl, read_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "webdancer-samples" / "sample_traj.jsonl"


class _Balance(HTMLParser):
    """Counts open/close tags, to check the HTML is well nested."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Balance:
    p = _Balance()
    p.feed(html)
    return p


def test_renders_a_webdancer_sample():
    record = next(read_jsonl(SAMPLES))
    traj = Trajectory.from_webdancer(record)
    html = viewer.render(record)  # the raw released record works as well as a Trajectory
    parsed = _parse(html)
    assert not parsed.errors and not parsed.stack
    text = "".join(parsed.text)
    assert traj.question in text and traj.prediction in text and str(traj.gold) in text
    turns = traj.assistant_turns
    first_think = turns[0].split("<think>")[1].split("</think>")[0].strip()
    assert first_think[:200] in text
    assert html.count('class="turn') == len(turns) == traj.turns
    # tool responses are collapsed: one <details> per observation (+ system and user prompt)
    assert html.count("<details>") == len(traj.observations) + 2
    assert "search response" in html
    assert "<tool_call>" not in html  # tags are rendered, never passed through raw
    assert viewer.show(traj)._repr_html_() == viewer.render(traj)


def test_escapes_and_shows_verdicts_and_format_errors():
    traj = Trajectory(question="Is <b>bold</b> & safe?", gold="yes", prediction=None, finish_reason="max_turns",
                      messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "I will answer <script>alert(1)</script>"}],
                      turns=1, judge={"correct": False, "method": "rules"},
                      filters={"validity": {"passed": False, "reason": "turn 1: no <think>"}, "kept": False,
                               "dropped_by": "validity"})
    html = viewer.render(traj)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bold" in html
    assert "dropped by validity" in html and 'class="badge bad"' in html
    assert 'class="turn err"' in html and "format:" in html  # the parser's error is shown on the turn


def test_cli_writes_a_browsable_page(tmp_path):
    ours = Trajectory(question="What is 2+2?", gold="4", prediction="4", turns=1,
                      messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "<think>easy</think>\n<answer>4</answer>"}],
                      judge={"correct": True, "method": "rules"}, filters={"kept": True})
    mixed = tmp_path / "mixed.jsonl"
    append_jsonl(mixed, [ours])
    with open(SAMPLES) as f, open(mixed, "a") as out:
        out.write(f.readline())
    html_path = tmp_path / "out.html"
    run = subprocess.run([sys.executable, "-m", "wdlib.viewer", str(mixed), str(html_path)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2 trajectories" in run.stdout
    page = html_path.read_text()
    parsed = _parse(page)
    assert not parsed.errors and not parsed.stack
    assert page.count('<details id="t') == 2 and 'href="#t1"' in page and "What is 2+2?" in page
    bad = subprocess.run([sys.executable, "-m", "wdlib.viewer", str(tmp_path / "missing.jsonl"), str(html_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_trajectory_statistics_and_figures_on_the_samples(tmp_path):
    from wdlib import plots
    from wdlib.trajectory import load_webdancer

    samples = load_webdancer(SAMPLES)
    stats = plots.trajectory_table(samples, "WebDancer samples", count_tokens=lambda s: len(s.split()))
    assert len(stats) == len(samples)
    first = samples[0]
    row = stats.iloc[0]
    assert row["actions"] == len(first.tool_calls) == row["search"] + row["visit"]
    assert row["turns"] == first.turns and row["answered"]
    think_words = sum(len(t.split("<think>")[1].split("</think>")[0].split()) for t in first.assistant_turns)
    assert row["think_tokens"] == think_words
    table = plots.means(stats)
    assert table.loc["WebDancer samples", "n"] == len(samples)
    assert table.loc["WebDancer paper, short CoT", "actions"] == 4.56
    for name, fig in {"funnel": plots.funnel({"a": {"input": 4, "validity": 3, "correctness": 2, "quality": 1}}),
                      "dist": plots.distributions(stats), "means": plots.means_bar(stats)}.items():
        out = plots.save(fig, tmp_path / f"{name}.html")
        assert out.stat().st_size > 1000
    assert (tmp_path / "plotly.min.js").is_file()  # written once beside the figures: they open offline
