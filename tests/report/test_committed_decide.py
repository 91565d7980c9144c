"""The README's account of the committed decision (`reports/quickstart_decide.*`) is the report's
JSON: every verdict, statistic and interval it quotes, and the cells the procedure added."""

import json
import re

from tests.conftest import ROOT

REPORT = json.loads((ROOT / "reports" / "quickstart_decide.json").read_text())


def _paragraph() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("**The quickstart's open ablations, decided**")
    return " ".join(text[start:text.index("\n\n", start)].split())


def test_the_readme_quotes_the_committed_decision():
    (decision,) = REPORT["decisions"]
    design, claims = decision["design"], decision["claims"]
    text = _paragraph()
    assert f"looked at at {', '.join(map(str, design['looks'][:-1]))} and {design['looks'][-1]} seeds" in text
    assert design["spending"] == "obrien_fleming" and "O'Brien-Fleming" in text and f"α = {design['alpha']:g}" in text
    futile = [c for c in claims if c["verdict"] == "stopped for futility"]
    held = [c for c in claims if c["holds"]]
    assert len(futile) == 2 and len(held) == 2 and decision["decided"]
    assert f"below the stop's {design['futility']:g}" in text
    for c in futile:
        (t,) = c["looks"][c["stop_look"] - 1]["t"]
        assert f"{t:.2f}" in text and c["seeds"] == design["looks"][0]
        low, high = (100 * x for x in c["interval"])
        assert f"[{low:+.2f}, {high:+.2f}]" in text
    for c in held:
        assert c["verdict"] == "equivalent within ±2" and c["seeds"] == design["looks"][-1]
        low, high = (100 * x for x in c["interval"])
        assert f"Δ {100 * c['estimate']:.2f}" in text
        assert f"[{low:+.2f}, {high:+.2f}]" in text
        assert f"{100 * c['confidence']:g}% repeated" in text
    added = sum(n - design["looks"][0] for n in decision["have"].values())
    assert f"trained {added} added cells" in text and f"needs the same {added} cells" in text
    assert re.search(r"seeds \d+-\d+ of the three", text).group(0) == f"seeds {design['looks'][0]}-{design['looks'][-1] - 1} of the three"


def test_the_committed_report_prints_the_same_decision():
    md = (ROOT / "reports" / "quickstart_decide.md").read_text()
    for c in REPORT["decisions"][0]["claims"]:
        low, high = (100 * x for x in c["interval"])
        assert f"{100 * c['confidence']:g}% repeated interval [{low:+.2f}, {high:+.2f}]" in md
        assert f"verdict: {c['verdict']}" in md
