"""Reading a judge's verdict out of its reply: `parse_verdict` (correct / incorrect / none) and `parse_yes_no` (one
`field: yes|no` line). Imports nothing from wdlib; `wdlib.judge` re-exports both.

A judge replies in many shapes: a bare `Correct` / `Incorrect` (what the equivalence prompt asks for), `correct: yes`
(the graded prompt), yes/no, in bold or back-quotes, with full-width punctuation (`判断：正确`), in Chinese
(正确/错误, 是/否, 等价/不等价), after a <think> block, as JSON, before or after an explanation, or as a closing
sentence ("The predicted answer is not equivalent to the reference."). `parse_verdict` reads the LAST line that holds
a verdict; a reply without one is None: the caller counts it as unparsed, never guesses.
"""

from __future__ import annotations

import re
import unicodedata

_TRUE_WORDS = {"yes", "correct", "right", "true", "equivalent", "the same", "correcto", "正确", "对", "是", "是的",
               "等价", "一致", "相同"}
_FALSE_WORDS = {"no", "incorrect", "not correct", "wrong", "not right", "false", "not equivalent", "different",
                "incorrecto", "错误", "错", "否", "不正确", "不对", "不是", "不等价", "不一致", "不同"}
_WORD = "|".join(re.escape(w) for w in sorted(_TRUE_WORDS | _FALSE_WORDS, key=len, reverse=True))
_BARE = re.compile(rf"^(?:{_WORD})$", re.IGNORECASE)
# A statement: a short lead-in, "is"/"as"/a colon, a verdict word, then nothing or punctuation and an explanation:
# "Judgement: Correct", "The final verdict is Incorrect.", "I would mark this as Correct", "判断为：正确（两个答案相同）"
_STATEMENT = re.compile(
    rf"^(?P<lead>.{{0,40}}?)(?P<sep>\s+(?:is|are|was|were|as)(?:\s*:)?|\s*(?:[:=\-–—→⇒]|=>|->)|\s*(?:为|是)\s*:?)\s*"
    rf"(?P<w>{_WORD})(?P<rest>\s*[.,;:!?。，；：！—–(/-].*)?$", re.IGNORECASE)
# a lead-in that names one of the answers compared lists it, it does not judge: "Reference: yes", "Predicted answer:
# No", "The reference answer is 'yes'" (but "The prediction matches: Correct" and "The response is correct" judge)
_ANSWER_LEAD = re.compile(r"(?:the\s+)?(?:(?:reference|gold|correct|predicted|extracted|model'?s?)[\s_]+"
                          r"(?:final[\s_]+)?answer|prediction|response|question)|参考答案|预测答案|问题", re.IGNORECASE)
_REFERENCE_LEAD = re.compile(r"reference|gold|参考", re.IGNORECASE)
_REASONING = re.compile(r"^(?:reasoning|explanation|analysis|rationale|reason|note|理由|说明|分析|解释)\s*:",
                        re.IGNORECASE)
_FIELD = re.compile(r"^(?:correct|equivalent)\s*:", re.IGNORECASE)  # the graded prompt's fields
# a verdict word, then punctuation and an explanation or a translation: "Incorrect. The years differ." / "错误，年份不同。"
_LEADING = re.compile(rf"^(?P<w>{_WORD})\s*[.,;:!。，；：！—–/(-]\s*\S", re.IGNORECASE)
# a closing sentence: "(Therefore,) the predicted answer is (not) correct / equivalent to the reference"
_SENTENCE = re.compile(
    r"^(?:(?:so|thus|therefore|hence|overall|in conclusion)\s*,?\s*)?(?:the\s+)?(?:predicted answer|prediction|"
    r"predicted|response|model'?s answer|model answer|extracted answer|final answer|answers?|they|both answers|"
    r"two answers|these answers|it)\s+(?:is|are|was|were)\s+(?P<neg>not\s+)?"
    r"(?P<w>correct|incorrect|right|wrong|equivalent|the same|different)"
    r"(?:\s+(?:to|as|with|from)\s+(?:the\s+)?(?:reference|gold|correct)(?:\s+answer)?)?"
    r"(?:\s*,?\s+(?:because|since|as)\b.*)?$", re.IGNORECASE)
_SENTENCE_ZH = re.compile(r"^(?:(?:因此|所以|综上)?(?:该|此|这个)?(?:预测答案|预测|回答|答案|结果|两者|二者|判断|判定)|"
                          r"因此|所以|综上)(?:是|为|判断为|判定为)?(?P<w>正确|错误|不正确|等价|不等价|一致|不一致)的?$")
_DECORATION = str.maketrans("", "", "*_`\"'“”‘’[]{}【】「」《》")


def _clean(line: str) -> str:
    """A line without markdown, LaTeX boxes, quotes, brackets, symbols (✅ ❌), leading bullets and headings, and
    trailing punctuation."""
    line = re.sub(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}", r"\1", line)
    line = "".join(c for c in line if unicodedata.category(c) != "So").translate(_DECORATION).strip()
    line = re.sub(r"^(?:[>#\-•+|=→⇒]+\s*|\d+[.)]\s+)+", "", line).strip()
    line = re.sub(r"[\s.,;:!?。，；！|]+$", "", line).strip()
    return line[1:-1].strip() if line.startswith("(") and line.endswith(")") else line


def _word_verdict(word: str) -> bool | None:
    word = re.sub(r"\s+", " ", _clean(word)).lower()
    return True if word in _TRUE_WORDS else False if word in _FALSE_WORDS else None


def _agreeing(verdict: bool | None, rest: str) -> bool | None:
    """`verdict`, unless what follows it is a verdict word that disagrees ("incorrect: yes" is no verdict; "Correct
    (正确)" is one)."""
    second = _word_verdict(rest.strip(" :/()-—–"))
    return verdict if second in (None, verdict) else None


def _sentence_verdict(clause: str) -> bool | None:
    if match := _SENTENCE.match(clause):
        verdict = _word_verdict(match.group("w"))
        return None if verdict is None else verdict != bool(match.group("neg"))
    if match := _SENTENCE_ZH.match(clause):
        return _word_verdict(match.group("w"))
    return None


def _line_verdict(raw: str, clauses: bool = True) -> bool | None:
    if raw.strip().endswith(("?", "？")):  # "Correct?" asks, it does not judge
        return None
    line = _clean(raw)
    if not line or _REASONING.match(line):  # "reasoning: the response is correct: …" explains, it does not judge
        return None
    if _BARE.match(line):
        return _word_verdict(line)
    statement = _STATEMENT.match(line)
    lead, colon = (statement.group("lead"), not statement.group("sep").strip().isalpha()) if statement else ("", 0)
    lists = _REFERENCE_LEAD.search(lead) or (colon and _ANSWER_LEAD.fullmatch(lead.strip()))
    if statement and not lists:
        verdict = _agreeing(_word_verdict(statement.group("w")), statement.group("rest") or "")
        # a field (`correct: no`) holds the verdict; another verdict word as a label must agree ("incorrect: yes")
        return verdict if not colon or _FIELD.match(lead + ":") else _agreeing(verdict, lead)
    if _FIELD.match(line):  # `correct: yesterday`: the field's value is no verdict
        return None
    if (labelled := re.match(r"^(?P<lead>.{0,20}?)\s*[:=]\s*(?P<v>.+)$", line)) \
            and not _ANSWER_LEAD.fullmatch(labelled.group("lead").strip()):
        if (verdict := _sentence_verdict(labelled.group("v"))) is not None:  # "结论：二者等价"
            return verdict
    if leading := _LEADING.match(line):
        return _agreeing(_word_verdict(leading.group("w")), line[leading.end("w"):])
    if (verdict := _sentence_verdict(line)) is not None:
        return verdict
    # its opening clause with the reasons after it ("预测答案正确，因为…"), or its closing clause ("… the same company.
    # So the answer is: Correct", "两者等价，正确")
    parts = re.split(r"(?<=[.!?;。！？；，,])\s*", line)
    if not clauses or len(parts) < 2:
        return None
    first = _sentence_verdict(_clean(parts[0]))
    return first if first is not None else _line_verdict(parts[-1], clauses=False)


def parse_verdict(text: str | None) -> bool | None:
    """The judge's verdict: True (correct / equivalent), False (incorrect), None when the reply holds none.

    The LAST line holding a verdict wins (a judge may restate its template or change its mind); a `<think>` block is
    skipped. A line holds a verdict when it is a verdict word (bare, bold, quoted, with its translation or its
    reasons after it), a short lead-in and a verdict word ("Judgement: Correct", "The final verdict is Incorrect"),
    or a closing sentence about the predicted answer ("… so the predicted answer is not equivalent to the reference").
    The words correct / incorrect inside reasoning ("reasoning: the response is correct: …"), a question
    ("Correct?"), a line describing one of the answers ("The reference answer is 'yes'") and an echoed template
    (`correct: yes|no`) are not verdicts.
    """
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text)  # full-width letters and punctuation → ASCII (：→ :)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None  # a reasoning judge cut off before it concluded
    for line in reversed(re.split(r"\n|(?<=[,{])\s*(?=\S+\s*:)", text)):
        verdict = _line_verdict(line)
        if verdict is not None:
            return verdict
    return None


def parse_yes_no(text: str | None, field: str) -> bool | None:
    """The LAST `field: yes|no` line of a reply (any decoration, full-width colon): True/False, or None."""
    if not text:
        return None
    found = None
    for line in unicodedata.normalize("NFKC", text).splitlines():
        match = re.match(rf"^{re.escape(field.translate(_DECORATION))}\s*:\s*(?P<w>.+)$", _clean(line),
                         flags=re.IGNORECASE)
        if match and _clean(match.group("w")).lower() in ("yes", "no"):
            found = _clean(match.group("w")).lower() == "yes"
    return found
