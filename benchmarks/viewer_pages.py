"""`longform view` at corpus scale: the samples page over 100k synthetic samples.

The database has 100k samples (~250 words each), a selection and two filter checks per sample, in
10 runs. Each page is asked 15 times through Starlette's TestClient (in process, so the time is the
server's: open the database read-only, run the page's reads, render); beside it, a bare
`SELECT … ORDER BY … LIMIT 50` of the same rows through the same read path. Goal (issue 17): every
samples page under 300 ms of server time (median).

    python benchmarks/viewer_pages.py [--samples 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from longform.store import Store, read_query  # noqa: E402
from longform.viewer.app import create_app  # noqa: E402

PAGES = {
    "samples, newest first": "/samples",
    "samples of one run, S_l ≥ 50, selected, by words": "/samples?run=r-3&sl_min=50&selected=yes&sort=words&dir=desc",
    "samples failing a filter, page 40": "/samples?failed=repeated_paragraphs&page=40",
    "samples, last page": "/samples?sort=score&dir=asc&page=2000",
    "one sample": "/samples/s-0077777",
    "runs": "/",
}


def build(db: Path, n: int) -> None:
    Store.open(db).close()  # the schema, migrated
    con = duckdb.connect(str(db))
    words = " ".join(["word"] * 250)
    con.execute("INSERT INTO runs SELECT 'r-' || i, 'bench', 'finished', '{}', NULL, NULL, now(), now(), '{}', '{}'"
                " FROM range(10) t(i)")
    con.execute(f"""INSERT INTO prompts (prompt_id, instruction, created_at)
                    SELECT 'p-' || lpad(i::VARCHAR, 6, '0'), 'Write about topic ' || i, now() FROM range({n // 2}) t(i)""")
    con.execute(f"""INSERT INTO samples (sample_id, prompt_id, run_id, writer, model, sample_index, text, words,
                        length_counter, required_words, required_source, length_score, n_sections, created_at,
                        length_kind, length_low, length_high)
                    SELECT 's-' || lpad(i::VARCHAR, 7, '0'), 'p-' || lpad((i // 2)::VARCHAR, 6, '0'), 'r-' || (i % 10),
                           CASE WHEN i % 3 = 0 THEN 'self_lengthen' ELSE 'agentwrite' END, 'm', i % 2, '{words} ' || i,
                           200 + (i * 7919) % 2000, 'lbw_words', 1000, 'instruction', (i * 104729) % 1000 / 10.0, 5,
                           now() - INTERVAL (i) SECOND, 'about', 1000, 1000
                    FROM range({n}) t(i)""")
    con.execute("""INSERT INTO selections SELECT 'sel-' || sample_id, run_id, 'sft', prompt_id, sample_id, NULL,
                        length_score > 40, 'bench', '{}', now() FROM samples""")
    con.execute("""INSERT INTO filter_checks SELECT run_id, 'sample', sample_id, f, (hash(sample_id || f) % 5) <> 0,
                        NULL, now() FROM samples, (VALUES ('repeated_paragraphs'), ('plan_labels')) v(f)""")
    con.close()


def timed(fn, repeat: int = 15) -> float:
    fn()  # warm: the file's pages in the OS cache, templates compiled
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lf-view-") as tmp:
        db = Path(tmp) / "big.duckdb"
        started = time.perf_counter()
        build(db, args.samples)
        built_s = time.perf_counter() - started
        client = TestClient(create_app(db))

        def get(url: str):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code, response.text[:300])

        pages = {name: round(timed(lambda url=url: get(url)), 1) for name, url in PAGES.items()}
        bare = round(timed(lambda: read_query(db, "SELECT sample_id, prompt_id, run_id, writer, words, required_words,"
                                                  " length_score, created_at FROM samples"
                                                  " ORDER BY created_at DESC LIMIT 50")), 1)
    worst = max(v for k, v in pages.items() if k.startswith("samples"))
    result = {"samples": args.samples, "build_s": round(built_s, 1), "pages_ms": pages, "bare_select_ms": bare,
              "worst_samples_page_ms": worst, "ratio_to_bare": round(pages["samples, newest first"] / bare, 2),
              "goal_met": worst < 300}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "viewer_pages.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
