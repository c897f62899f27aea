"""Graded QA (`wdlib.synthesis.facts`, `wdlib.synthesis.graded`): facts read off pages, questions at three levels,
grounded teacher episodes over the real local web, and the split by answer page."""

from __future__ import annotations

import asyncio
import re

import pytest

from wdlib import web
from wdlib.react import check_format, parse_turn
from wdlib.sites import Page
from wdlib.synthesis import facts as F
from wdlib.synthesis import graded as G
from wdlib.synthesis.filters import answer_supported
from wdlib.trajectory import QAPair

W = "https://en.wikipedia.org/wiki/"


def _wiki(title: str, text: str, description: str = "", topic: str = "Arts") -> Page:
    html = f'<html><body><p>{text}</p><div id="catlinks">Topic: {topic}</div></main></body></html>'
    return Page(url=W + title.replace(" ", "_"), title=f"{title} - Wikipedia", site="wikipedia", text=text,
                links=[], html=html, description=description)


PAGES = [
    _wiki("Otto Hahn", "Otto Hahn was a German chemist who was a pioneer in the field of radiochemistry. He received "
          "the 1944 Nobel Prize in Chemistry.", "German chemist (1879–1968)", topic="People"),
    _wiki("Akira Kurosawa", "Akira Kurosawa was a Japanese filmmaker.", "Japanese filmmaker (1910–1998)", "People"),
    _wiki("Seven Samurai", "Seven Samurai is a 1954 Japanese epic film directed by Akira Kurosawa.",
          "1954 film by Akira Kurosawa"),
    _wiki("Tungsten", "Tungsten is a chemical element; it has symbol W and atomic number 74.",
          "Chemical element with atomic number 74 (W)", "Physical sciences"),
    _wiki("Dakar", "Dakar is the capital and largest city of Senegal. It lies on the Atlantic coast.",
          "Capital of Senegal", "Geography"),
    _wiki("Senegal", "Senegal is a country in West Africa.", "Country in West Africa", "Geography"),
    # a painter's life span in a page that is not about a person (topic) is not a birth year
    _wiki("Baroque", "Baroque is a style.", "Art style (1600–1750)"),
    Page(url="https://docs.python.org/3/library/math.html", title="math — Mathematical functions", site="python-docs",
         text="math.comb(n, k)\nReturn the number of ways to choose k items from n items.\nNew in version 3.8.\n"
              "math.ceil(x)\nReturn the ceiling of x.\nmeth.__get__(x)\nNew in version 3.9.", links=[]),
]


def test_facts_are_read_off_the_patterns_of_each_page():
    facts = {(f.subject, f.relation): f for f in F.encyclopedia_facts(PAGES) + F.docs_facts(PAGES)}
    assert facts[("Otto Hahn", "born")].answer == "1879" and facts[("Otto Hahn", "died")].answer == "1968"
    assert facts[("Otto Hahn", "nobel")].answer == "1944" and facts[("Otto Hahn", "nobel")].extra["field"] == "Chemistry"
    work = facts[("Seven Samurai", "creator")]
    assert (work.answer, work.kind, work.extra["role"], work.extra["creator_url"]) == \
        ("Akira Kurosawa", "film", "director", W + "Akira_Kurosawa")
    assert facts[("Seven Samurai", "year")].answer == "1954"
    assert facts[("Tungsten", "symbol")].answer == "W" and facts[("Tungsten", "atomic_number")].answer == "74"
    capital = facts[("Senegal", "capital")]
    assert (capital.answer, capital.subject_url, capital.answer_url) == ("Dakar", W + "Senegal", W + "Dakar")
    assert facts[("math.comb", "added_in")].answer == "3.8"
    assert ("Baroque", "born") not in facts  # not a person
    assert ("meth.__get__", "added_in") not in facts and ("math.ceil", "added_in") not in facts


def test_questions_name_or_describe_the_subject_without_giving_the_answer_away():
    facts = {(f.subject, f.relation): f for f in F.encyclopedia_facts(PAGES) + F.docs_facts(PAGES)}
    born = facts[("Otto Hahn", "born")]
    assert F.question(born) == "In what year was Otto Hahn born?"
    desc = F.description(born, PAGES[0])
    assert desc == "the German chemist who was a pioneer in the field of radiochemistry"
    level2 = F.question(born, desc)
    assert "Hahn" not in level2 and "1879" not in level2
    chain = F.chain_question(facts[("Seven Samurai", "creator")], facts[("Akira Kurosawa", "died")])
    assert chain == "In what year did the director of the film Seven Samurai die?"
    assert F.description(facts[("math.comb", "added_in")], PAGES[-1]) == \
        "the Python function that returns the number of ways to choose k items from n items"


def test_answers_count_only_where_an_observation_states_them():
    search = ("A Google search for 'x' found 2 results:\n\n## Web Results\n1. [Python 3.8 notes](https://a/3.8)\n\n"
              "Nothing here.\n\n2. [Otto Hahn - Wikipedia](https://en.wikipedia.org/wiki/Otto_Hahn)\n\n"
              "Otto Hahn (1879–1968) was a German chemist.\n")
    assert G.find_answer("3.8", search) is None  # a version only as "New in version X", never in a title or link
    assert G.find_answer("1879", search) and G.find_answer("187", search) is None
    assert G.quote(search, "1879") == "Otto Hahn (1879–1968) was a German chemist"
    assert G._result_with(search, "1879") == (2, "Otto Hahn - Wikipedia")
    assert G.find_answer("3.9", "math.sin(x)\nNew in version 3.9.") is not None


def test_split_keeps_every_answer_page_in_one_split_and_fills_the_quotas():
    qa = [QAPair(question=f"q{page}-{level}-{i}", answer="a", source="graded", difficulty=level,
                 provenance={"level": level, "answer_page": f"p{page}"})
          for page in range(60) for level in (1, 2, 3) for i in range(page % 2 + 1)]
    splits = G.split_by_answer_page(qa, {"eval": 10, "dev": 5, "dapo": 5}, seed=3)
    pages = {s: {q.provenance["answer_page"] for q in qs} for s, qs in splits.items()}
    assert sum(len(v) for v in splits.values()) == len(qa)
    assert all(not (pages[a] & pages[b]) for a in pages for b in pages if a < b)
    for split, quota in (("eval", 10), ("dev", 5), ("dapo", 5)):
        for level in (1, 2, 3):
            assert sum(q.provenance["level"] == level for q in splits[split]) >= quota
    assert splits["sft"] and splits == G.split_by_answer_page(qa, {"eval": 10, "dev": 5, "dapo": 5}, seed=3)


def test_the_sft_selection_takes_every_level_even_when_one_is_scarce():
    qa = [QAPair(question=f"q{i}", answer="a", source="graded", provenance={"level": 1 if i < 30 else 3})
          for i in range(33)]  # a prefix of 12 would hold only level 1
    picked = G.balanced(qa, 12)
    assert [q.provenance["level"] for q in picked].count(3) == 3 and len(picked) == 12
    assert [q.question for q in picked if q.provenance["level"] == 1] == [f"q{i}" for i in range(9)]
    assert G.balanced(qa, None) == qa and G.balanced(qa, 99) == qa


@pytest.fixture(scope="module")
def smoke_web():
    """The smoke params' web (3,000 encyclopedia pages: the CI web's 1,000 best-connected pages hold too few people
    and works for level-3 chains); built by set-up, cached."""
    from wdlib import params
    from wdlib.tools import Toolbox

    cfg = params.load("smoke.yaml")
    with Toolbox.from_config(cfg) as toolbox:
        yield web.LocalWeb.load(cfg.web).pages, toolbox


def test_teacher_episodes_are_grounded_in_the_real_tools(smoke_web):
    local_pages, toolbox = smoke_web
    cands = G.candidates(local_pages, per_level=6, seed=0)
    assert {c.level for c in cands} == {1, 2, 3}
    kept = 0
    for c in cands:
        traj, why = asyncio.run(G.teacher_episode(c, toolbox, prompt="compact", qa_id="q"))
        if traj is None:
            assert why != "ok"
            continue
        kept += 1
        assert check_format(traj.messages) is None and traj.prediction == c.answer == traj.gold
        observations = [m["content"] for m in traj.messages[2:] if m["role"] == "user"]
        assert answer_supported(traj.prediction, None, observations, 1.0)[0]  # the funnel's grounding rule
        turns = [parse_turn(m["content"]) for m in traj.messages if m["role"] == "assistant"]
        # every quote in a thought is text of the observation just before it
        for turn, obs in zip(turns[1:], observations):
            for quoted in re.findall(r'says: "(.*?)"\.', turn.think):
                assert quoted.strip(".").removeprefix("...").removesuffix("...") in obs
        # the observations are the tools' own answers to the calls made
        call = turns[0].tool_call
        assert observations[0] == f"<tool_response>\n{asyncio.run(toolbox.call(call.name, call.arguments))}\n</tool_response>"
        if c.level == 3:
            assert [t.tool_call.name for t in turns[:2]] == ["search", "search"] and c.bridge[0] in turns[1].think
    assert kept >= 8


def test_a_question_whose_answer_no_observation_states_is_dropped(smoke_web):
    local_pages, toolbox = smoke_web
    person = next(p for p in local_pages if "Topic: People" in (p.html or "") and F._LIFESPAN.search(p.description))
    c = G.Candidate(1, f"In what year was {F.page_name(person)} born?", "1234567", "born", person.url, person.url)
    traj, why = asyncio.run(G.teacher_episode(c, toolbox, prompt="compact"))
    assert traj is None and why in ("the page's evidence does not state the answer",
                                    "the subject's page is not among the search results")


def test_graded_stage_writes_the_splits_the_funnel_keeps_the_episodes_and_dapo_reads_its_own(smoke_web, tmp_path):
    from wdlib import params
    from wdlib.dapo import load_questions
    from wdlib.synthesis import stages
    from wdlib.trajectory import load_qa, load_trajectories

    _, toolbox = smoke_web
    cfg = params.load("smoke.yaml")
    cfg.run.output_dir, cfg.run.name = str(tmp_path), "graded"
    cfg.synthesis.graded = cfg.synthesis.graded.model_copy(update={
        "candidates_per_level": 10, "eval_per_level": 2, "dev_per_level": 1, "dapo_per_level": 1})
    splits, episodes, report = asyncio.run(stages.graded_pairs(cfg, toolbox, progress=False))
    assert report["kept"] and set(splits) == set(G.SPLITS)
    pages = {s: {q.provenance["answer_page"] for q in qs} for s, qs in splits.items()}
    assert all(not (pages[a] & pages[b]) for a in pages for b in pages if a < b)
    assert sorted(t.qa_id for t in episodes) == sorted(q.id for q in splits["sft"])
    again = asyncio.run(stages.graded_pairs(cfg, None, progress=False))  # reused: no toolbox needed
    assert again[2] is None and {s: [q.id for q in qs] for s, qs in again[0].items()} == \
        {s: [q.id for q in qs] for s, qs in splits.items()}

    out = stages.write_qa(cfg, [], splits)
    assert [q.id for q in load_qa(cfg.paths.qa_eval)] == [q.id for q in splits["eval"]] == [q.id for q in out["eval"]]
    assert len(load_qa(cfg.paths.qa_dev)) == len(splits["dev"]) and load_qa(cfg.paths.qa) and out["dapo"]
    trajectories, funnel = asyncio.run(stages.teacher_trajectories(cfg, out["train"], None, toolbox,
                                                                   episodes=episodes))
    # every grounded episode passes validity, correctness and the grounding rule of the funnel
    assert funnel["kept"] == len(episodes) == funnel["sources"]["teacher"]["kept"] > 0
    assert {t.id for t in load_trajectories(cfg.paths.sft_data)} == {t.id for t in episodes}
    # DAPO trains on questions SFT never saw: the DAPO split (the SFT split's questions are all used)
    assert {q.id for q in load_questions(cfg)} == {q.id for q in splits["dapo"]}
