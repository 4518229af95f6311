"""`longform view` through Starlette's TestClient: every page and filter, escaping, an empty and a
missing database; and once in a real browser (Debian's chromium + chromium-driver, selenium)."""

import re
import shutil
import socket
import time

import pytest
from starlette.testclient import TestClient

from longform.store import Store
from longform.viewer.app import create_app

from helpers import longform
from viewer_corpus import RUN, SCRIPT, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    db = tmp_path_factory.mktemp("view") / "corpus.duckdb"
    write_corpus(db)
    return db


@pytest.fixture(scope="module")
def client(corpus):
    return TestClient(create_app(corpus))


def _ids(html):
    return re.findall(r'class="sample-link" href="/samples/([^"]+)"', html)


def test_runs_page_links_to_the_runs_samples_and_failures(client):
    page = client.get("/")
    assert page.status_code == 200
    assert f'href="/runs/{RUN}"' in page.text and f"/samples?run={RUN}" in page.text and f"/failures?run={RUN}" in page.text
    run = client.get(f"/runs/{RUN}")
    assert run.status_code == 200 and "Stages" in run.text and run.text.count("<svg") == 3   # lengths, S_l, judge vs length
    assert '/pairs/dpo-tea' in run.text


def test_samples_filters_sort_and_paginate(client):
    assert _ids(client.get("/samples").text) == ["s-2", "s-1", "s-0"]             # newest first
    assert _ids(client.get("/samples", params={"writer": "self_lengthen"}).text) == ["s-2"]
    assert _ids(client.get("/samples", params={"prompt": "p-tea", "sl_min": 90}).text) == ["s-2", "s-0"]
    assert _ids(client.get("/samples", params={"prompt": "p-tea", "sl_min": 90, "dir": "asc"}).text) == ["s-0", "s-2"]
    assert _ids(client.get("/samples", params={"sl_max": 50}).text) == ["s-1"]
    assert _ids(client.get("/samples", params={"selected": "no", "run": RUN}).text) == ["s-1"]
    assert sorted(_ids(client.get("/samples", params={"selected": "yes"}).text)) == ["s-0", "s-2"]
    assert _ids(client.get("/samples", params={"failed": "min_length_score"}).text) == ["s-1"]
    assert _ids(client.get("/samples", params={"sort": "words", "dir": "asc"}).text) == ["s-1", "s-2", "s-0"]
    assert _ids(client.get("/samples", params={"sort": "words", "dir": "desc"}).text) == ["s-0", "s-2", "s-1"]
    assert "Page 1 of 1" in client.get("/samples").text
    bad = client.get("/samples", params={"sl_min": "lots"})
    assert bad.status_code == 400 and "sl_min must be a number" in bad.text
    assert client.get("/samples", params={"sort": "text; drop table samples"}).status_code == 400


def test_sample_page_shows_length_sections_lineage_judges_filters_and_requests(client):
    page = client.get("/samples/s-0").text
    assert "about 300 words</b>" in page and "aim 300" in page and "in_band</span> (every planned section written" in page
    assert "Words per section" in page and page.count('class="section"') == 2
    assert "truncated (max_tokens)" in page and "1 continuation" in page and "text so far elided" in page
    assert "P(first) 0.800" in page and "expected 47.5" in page and "S_l 33.3 &lt; 50" not in page
    assert "http://127.0.0.1:1/v1" in page and "/pairs/dpo-tea" in page
    chain = client.get("/samples/s-2").text
    assert 'id="lineage"' in chain and "120 → 200" in chain and "ends_with_punctuation: pass" in chain
    assert client.get("/samples/s-1").text.count("S_l 33.3 &lt; 50") == 1


def test_prompt_pair_and_failure_pages(client):
    prompt = client.get("/prompts/p-tea").text
    assert prompt.index("s-0") < prompt.index("s-2") < prompt.index("s-1")     # longest first
    pair = client.get("/pairs/dpo-tea").text
    assert "Chosen" in pair and "Rejected" in pair and "margin 10.000" in pair
    failures = client.get("/failures", params={"run": RUN}).text
    assert "unparsable_plan" in failures and 'href="/prompts/p-moon"' in failures
    for missing in ("/samples/nope", "/prompts/nope", "/pairs/nope", "/runs/nope"):
        response = client.get(missing)
        assert response.status_code == 404 and "nope" in response.text


def test_every_text_is_escaped(client):
    for url in ("/samples/s-0", "/prompts/p-tea", "/failures", "/pairs/dpo-tea"):
        html = client.get(url).text
        assert SCRIPT not in html, url
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html, url


def test_an_empty_and_a_missing_database(tmp_path):
    empty = tmp_path / "empty.duckdb"
    Store.open(empty).close()
    client = TestClient(create_app(empty))
    assert "No runs in this database yet" in client.get("/").text
    assert "No sample matches" in client.get("/samples").text and "No failures" in client.get("/failures").text
    gone = TestClient(create_app(tmp_path / "missing.duckdb")).get("/")
    assert gone.status_code == 503 and "no database here yet" in gone.text
    proc = longform("view", "--db", str(tmp_path / "missing.duckdb"), cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "no database here yet" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_in_a_real_browser(corpus, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = _free_port()
    proc = longform("view", "--db", str(corpus), "--port", str(port), cwd=tmp_path)
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2400"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    driver.get(f"http://127.0.0.1:{port}/")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert "Runs" in driver.title
            driver.find_element(By.LINK_TEXT, "samples").click()
            rows = driver.find_elements(By.CSS_SELECTOR, "a.sample-link")
            assert sorted(r.text for r in rows) == ["s-0", "s-1", "s-2"]
            driver.find_element(By.LINK_TEXT, "s-0").click()
            assert driver.find_element(By.ID, "length").text.startswith("Asked: about 300 words")
            assert driver.execute_script("return window.pwned") is None          # the sample's script stayed text
            assert SCRIPT in driver.find_element(By.CSS_SELECTOR, "#section-1 h4").text
            driver.save_screenshot(str(tmp_path / "sample.png"))
            driver.get(f"http://127.0.0.1:{port}/samples?writer=self_lengthen")
            driver.find_element(By.LINK_TEXT, "s-2").click()
            lineage = driver.find_element(By.ID, "lineage")
            assert lineage.text == "Self-Lengthen lineage"
            assert "200 → 280" in driver.find_element(By.TAG_NAME, "main").text
            assert (tmp_path / "sample.png").stat().st_size > 10_000
        finally:
            driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_while_a_build_holds_the_database_pages_come_through_the_builds_reader(corpus, tmp_path):
    import subprocess
    import sys

    held = tmp_path / "held.duckdb"
    shutil.copy(corpus, held)
    # Another process holds the file for writing, as a running build does.
    writer = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; from longform.store import"
                               " Store; s = Store.open(Path(sys.argv[1]), live=True); print('ready', flush=True); sys.stdin.read()",
                               str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        page = TestClient(create_app(held)).get("/samples", params={"writer": "self_lengthen"})
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert page.status_code == 200 and _ids(page.text) == ["s-2"]


def test_report_command_draws_the_run_with_its_judges(corpus, tmp_path):
    proc = longform("report", "--db", str(corpus), "--run", RUN, "--out", str(tmp_path / "report"), cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    text = (tmp_path / "report" / "report.md").read_text()
    assert "SFT: 2 of 3 samples selected. DPO: 1 pairs from 1 prompts." in text
    assert ("**m**, pairwise: 2 verdicts (2 graded from logprobs); position bias +0.20" in text
            and "the longer answer wins 60% as judged, 50% length-controlled" in text)
    summary = text.index("**m**, pairwise")
    assert summary < text.index("| judge | kind | status |")     # before the table, not inside it
    assert (tmp_path / "report" / "lengths.png").exists()


def test_eval_pages(tmp_path):
    """An evaluation of two served models (stand-ins over HTTP): the list, the comparison with its
    paired differences, one chart per model, and every answer (escaped)."""
    from fault_server import FaultServer, ok
    from judges.length_eval import eval_prompts
    from judges.model_eval import Sampling, endpoint_contestant, evaluate
    from longform.config import Settings

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{n}", "instruction": "Write a {n}-word note."}}\n' for n in (20, 30, 40)))
    letters = "abcdefghijklmnopqrstuvwxyz"

    def writer(fraction):
        def answer(body):
            n = int(re.search(r"(\d+)-word", body["messages"][-1]["content"]).group(1))
            return ok(" ".join(f"w{letters[i % 26]}" + letters[i // 26] for i in range(int(n * fraction))) + " <script>.")
        return answer

    db = tmp_path / "e.duckdb"
    with FaultServer("good") as good, FaultServer("short") as short:
        good.answer, short.answer = writer(1.0), writer(0.4)
        with Store.open(db) as store:
            result = evaluate(store, [endpoint_contestant(f"short@{short.base_url}"),
                                      endpoint_contestant(f"good@{good.base_url}")],
                              eval_prompts(prompts), prompts_path=str(prompts), sampling=Sampling(), settings=Settings())
    client = TestClient(create_app(db))
    listing = client.get("/evals")
    assert listing.status_code == 200 and f"/evals/{result.eval_id}" in listing.text and "good (" in listing.text
    page = client.get(f"/evals/{result.eval_id}")
    assert page.status_code == 200
    assert page.text.count("<svg") == 2 and "<script>" not in page.text and "&lt;script&gt;" in page.text
    row = re.search(r"<td>good</td><td>short</td><td>length_score</td><td class=\"num\">3</td>(.*?)</tr>", page.text, re.S)
    assert row and "higher" in row.group(1)
    assert client.get("/evals/e-missing").status_code == 404


def test_non_finite_numbers_and_a_busy_port(client, corpus, tmp_path):
    for name, value in (("page", "nan"), ("page", "inf"), ("sl_min", "-inf")):
        bad = client.get("/samples", params={name: value})
        assert bad.status_code == 400 and f"{name} must be a finite number" in bad.text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = longform("view", "--db", str(corpus), "--port", str(port), cwd=tmp_path)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.strip().count("\n") == 0
    assert f"127.0.0.1:{port}: cannot listen there" in err and "Traceback" not in err
