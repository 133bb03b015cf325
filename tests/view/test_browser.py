"""The viewer in a real browser: headless Chromium (the Debian package, driven by selenium) opens the site
built from a real bench run (the runner + Judge on the fake backend), clicks list -> item -> back, filters by
status and checks the DOM. Screenshots of the three views are kept under .artifacts/view/.

scripts/test.sh installs chromium + chromium-driver and sets CERM_BROWSER_REQUIRED=1, so in CI a missing
browser fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from bench.helpers import run_fixture

from cerm.view import build_site, load

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "view"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        why = "needs the Debian chromium and chromium-driver packages (scripts/test.sh installs them)"
        if os.environ.get("CERM_BROWSER_REQUIRED"):
            pytest.fail(why)
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "judgebench"
    run_fixture("judgebench", run_dir)
    out = run_dir / "view"
    build_site(load(run_dir), out, chunk_size=2)  # tiny chunks: item pages load their chunk on demand
    return out


@pytest.fixture(scope="module")
def compare_site(tmp_path_factory) -> Path:
    from cerm.bench.baselines import make_baseline

    root = tmp_path_factory.mktemp("compare")
    run_fixture("judgebench", root / "judge")
    run_fixture("judgebench", root / "length", make_baseline("length"))
    build_site(load(root / "judge"), root / "site", compare=load(root / "length"), chunk_size=3)
    return root / "site"


def _wait(driver):
    """A wait whose condition may meet an element the viewer has just replaced: a view renders "loading…"
    and then its content, so an element found a moment before can be gone when its text is read
    (StaleElementReferenceException, once in a CI run). Such a read counts as "not yet", like a missing one."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,))


def _open(driver, url: str) -> None:
    """Load ``url`` as a new document. The tests share one browser: going from ``index.html#a`` to
    ``index.html#b`` of the same site would only change the hash, and the view would still show the previous
    test's state until the hashchange event re-renders it."""
    driver.get("about:blank")
    driver.get(url)


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_list_item_back_and_status_filter(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    wait = _wait(d)
    _open(d, (site / "index.html").as_uri())
    assert d.find_element(By.ID, "view-summary").is_displayed()
    assert d.find_element(By.ID, "headline-value").text.strip() not in ("", "–")
    assert d.find_elements(By.CSS_SELECTOR, ".plots img")
    _shot(d, "summary")

    d.find_element(By.ID, "nav-items").click()
    wait.until(lambda _: d.find_element(By.ID, "view-items").is_displayed())
    rows = d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")
    n_items = len(rows)
    assert n_items > 2 and d.find_element(By.ID, "list-count").text.startswith(f"{n_items} of {n_items}")
    gaps = [r.find_element(By.CSS_SELECTOR, "td:nth-child(6)").text for r in rows]
    assert all(g == "–" or re.fullmatch(r"-?\d+\.\d\d", g) for g in gaps), gaps  # one format down the column
    _shot(d, "items")

    # list -> item: the third row lives in the second data chunk, loaded on demand
    target_id = rows[2].find_element(By.CSS_SELECTOR, "td:nth-child(2)").text
    rows[2].click()
    wait.until(lambda _: d.find_element(By.ID, "view-item").is_displayed()
               and d.find_elements(By.CSS_SELECTOR, "#view-item .card"))
    assert d.find_element(By.CSS_SELECTOR, "#view-item .item-id").text == target_id
    cards = d.find_elements(By.CSS_SELECTOR, "#view-item .card")
    assert len(cards) == 2
    assert d.find_elements(By.CSS_SELECTOR, "#view-item .crit-items li")  # parsed criteria
    assert "[Start of Criteria]" in d.find_element(By.CSS_SELECTOR, "#view-item details.raw pre").get_attribute(
        "textContent")
    assert d.find_elements(By.CSS_SELECTOR, "#view-item mark.box-overall")  # the scored box is highlighted
    assert d.find_elements(By.CSS_SELECTOR, "#view-item mark.box-criterion")
    _shot(d, "item")

    d.back()  # item -> back to the list
    wait.until(lambda _: d.find_element(By.ID, "view-items").is_displayed())
    assert len(d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")) == n_items

    # filter by status: only the items with a failed judgment remain
    Select(d.find_element(By.CSS_SELECTOR, "#filters [name=status]")).select_by_value("no_box")
    # the hash changes at once, the list on the hashchange event after it: wait for the list itself
    wait.until(lambda _: "status=no_box" in d.current_url
               and not d.find_element(By.ID, "list-count").text.startswith(f"{n_items} of "))
    filtered = d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")
    assert 0 < len(filtered) < n_items
    for r in filtered:
        assert "no_box" in r.find_element(By.CSS_SELECTOR, "td:nth-child(7)").text
    _shot(d, "items-no_box")
    filtered[0].click()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#view-item .card .s-no_box"))
    d.back()  # back keeps the filter
    wait.until(lambda _: d.find_element(By.ID, "view-items").is_displayed())
    assert len(d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")) == len(filtered)
    assert Select(d.find_element(By.CSS_SELECTOR, "#filters [name=status]")).first_selected_option.text == "no_box"
    logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"] if hasattr(d, "get_log") else []
    assert not logs, logs


def test_search_box_filters_by_query_text(browser, site):
    from selenium.webdriver.common.by import By

    d = browser
    _open(d, (site / "index.html").as_uri() + "#items")
    _wait(d).until(lambda _: d.find_element(By.ID, "view-items").is_displayed())
    first_id = d.find_element(By.CSS_SELECTOR, "#item-list tbody tr td:nth-child(2)").text
    box = d.find_element(By.CSS_SELECTOR, "#filters [name=q]")
    box.send_keys(first_id)
    _wait(d).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")) == 1)


def test_expected_score_distribution_flags_and_hostile_text(browser, tmp_path):
    """Fields other engineers add (expected score, distribution, flags) render; text never becomes markup."""
    import json

    from selenium.webdriver.common.by import By

    from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation

    hostile = 'look <img src=x onerror="document.title=1"></script><b>bold</b>'
    line = {"id": "h1", "query": hostile, "responses": [hostile, "plain"],
            "criteria": {"text": CANNED_CRITERIA, "items": [{"term": "Correctness", "description": "right"}]},
            "judgments": [{"score": 8, "status": "ok", "evaluation": canned_evaluation(8), "expected_score": 7.6,
                           "score_probs": [{14: 0.3, 16: 0.6, 18: 0.1}.get(k, 0.0) for k in range(21)],
                           "score_entropy": 0.9, "is_off_grid": True},
                          {"score": None, "status": "no_box", "evaluation": "no score"}]}
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps(line) + "\n")
    build_site(load(path), tmp_path / "site")
    d = browser
    _open(d, (tmp_path / "site" / "index.html").as_uri() + "#item/0")
    _wait(d).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#view-item .card"))
    first = d.find_elements(By.CSS_SELECTOR, "#view-item .card")[0]
    assert len(first.find_elements(By.CSS_SELECTOR, ".dist .bar")) == 3
    assert [e.text for e in first.find_elements(By.CSS_SELECTOR, ".expected")] == ["E 7.60", "H 0.90"]
    assert first.find_element(By.CSS_SELECTOR, ".flag").text == "off_grid"
    assert not d.find_elements(By.CSS_SELECTOR, "#view-item img, #view-item b:not(.crit-items b)")
    assert hostile in d.find_element(By.CSS_SELECTOR, "#view-item .query-text").text
    assert d.title.startswith("cerm view")


def test_compare_view_lists_changed_verdicts_and_shows_run_b_under_the_item(browser, compare_site):
    from selenium.webdriver.common.by import By

    d = browser
    wait = _wait(d)
    _open(d, (compare_site / "index.html").as_uri())
    d.find_element(By.ID, "nav-compare").click()
    wait.until(lambda _: d.find_element(By.ID, "view-compare").is_displayed())
    rows = d.find_elements(By.CSS_SELECTOR, "#compare-list tbody tr")
    assert rows and d.find_element(By.CSS_SELECTOR, "#view-compare h2").text.startswith(f"{len(rows)} of ")
    _shot(d, "compare")
    verdict_a = rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(3)").text
    verdict_b = rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(4)").text
    assert verdict_a != verdict_b
    rows[0].find_element(By.CSS_SELECTOR, "td:first-child a").click()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#run-b .card"))
    assert d.find_element(By.CSS_SELECTOR, "#view-item h2 .verdict").text == verdict_a
    assert d.find_element(By.CSS_SELECTOR, "#run-b h3 .verdict").text == verdict_b
    assert len(d.find_elements(By.CSS_SELECTOR, "#run-b .card")) == 2


def test_pages_of_a_long_list_and_gap_filter(browser, tmp_path):
    import json

    from selenium.webdriver.common.by import By

    lines = [{"id": f"q{i}", "query": f"query {i}", "responses": ["a", "b"],
              "judgments": [{"score": i % 11, "status": "ok"}, {"score": 0, "status": "ok"}]} for i in range(120)]
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    build_site(load(path), tmp_path / "site", chunk_size=7)
    d = browser
    wait = _wait(d)
    _open(d, (tmp_path / "site" / "index.html").as_uri() + "#items")
    wait.until(lambda _: d.find_element(By.ID, "page-info").text == "page 1 of 3")
    assert len(d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")) == 50
    d.find_element(By.ID, "next-page").click()
    wait.until(lambda _: d.find_element(By.ID, "page-info").text == "page 2 of 3")
    assert d.find_element(By.CSS_SELECTOR, "#item-list tbody tr td:nth-child(2)").text == "q50"
    d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr")[3].click()  # q53, in chunk 7
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#view-item .item-id"))
    assert d.find_element(By.CSS_SELECTOR, "#view-item .item-id").text == "q53"
    d.back()
    wait.until(lambda _: d.find_element(By.ID, "page-info").text == "page 2 of 3")
    gap = d.find_element(By.CSS_SELECTOR, "#filters [name=gapmin]")
    gap.send_keys("10")
    d.find_element(By.CSS_SELECTOR, "#filters [name=q]").click()  # leaving the field commits the change
    wait.until(lambda _: d.find_element(By.ID, "list-count").text.startswith("10 of 120"))


def test_next_and_previous_walk_the_filtered_list(browser, site):
    from selenium.webdriver.common.by import By

    d = browser
    wait = _wait(d)
    _open(d, (site / "index.html").as_uri() + "#items?verdict=correct")
    wait.until(lambda _: d.find_element(By.ID, "view-items").is_displayed())
    ids = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr td:nth-child(2)")]
    assert len(ids) >= 2
    d.find_element(By.CSS_SELECTOR, "#item-list tbody tr").click()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#view-item .item-id"))
    assert not d.find_elements(By.ID, "prev-item")  # the first of the filtered list
    d.find_element(By.ID, "next-item").click()
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#view-item .item-id").text == ids[1])
    d.find_element(By.TAG_NAME, "body").send_keys("k")  # the keyboard goes back one
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#view-item .item-id").text == ids[0])
    d.find_element(By.TAG_NAME, "body").send_keys("u")
    wait.until(lambda _: d.find_element(By.ID, "view-items").is_displayed() and "verdict=correct" in d.current_url)
