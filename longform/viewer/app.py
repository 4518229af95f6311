"""The viewer's pages: Starlette routes rendering Jinja2 templates on the server, read-only.

Every text is escaped by Jinja2's autoescape (a sample containing `<script>` is shown as text);
the browser sends only query parameters, which become bound parameters of named reads
(longform/store/browsing.py) — no SQL comes from the browser.
"""

from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from longform import lengths, reasons
from longform.store.browsing import PAGE_SIZE, SORTS, CorpusReads, SampleFilter
from longform.errors import LongformError
from longform.viewer import charts

_TEMPLATES = Path(__file__).parent / "templates"


def create_app(db: Path) -> Starlette:
    env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(db=str(db), PAGE_SIZE=PAGE_SIZE)
    env.filters["meaning"] = reasons.meaning  # a stored reason, explained on hover
    env.globals["asked"] = lengths.asked      # a sample's length spec, in words

    def render(name: str, status: int = 200, **values) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**values), status_code=status)

    def page(handler):
        """A route on one read-only connection for the page; a missing or unreadable database is a
        clear page, not a traceback."""
        def work(request: Request) -> HTMLResponse:
            with CorpusReads.open(db) as reads:
                return handler(request, reads)

        async def endpoint(request: Request) -> HTMLResponse:
            try:
                # DuckDB calls block: off the event loop, so one slow page does not stall the others.
                return await run_in_threadpool(work, request)
            except LongformError as e:
                return render("error.html", 503, title="Database not readable", message=str(e))
            except BadParameter as e:
                return render("error.html", 400, title="Bad filter", message=str(e))
        return endpoint

    def not_found(what: str, key: str) -> HTMLResponse:
        return render("error.html", 404, title=f"No such {what}", message=f"{what} {key!r} is not in {db}")

    def runs(request: Request, reads: CorpusReads) -> HTMLResponse:
        return render("runs.html", runs=reads.runs())

    def run(request: Request, reads: CorpusReads) -> HTMLResponse:
        found = reads.run(request.path_params["run_id"])
        if found is None:
            return not_found("run", request.path_params["run_id"])
        points = found["points"]
        plots = [c for c in (
            charts.histogram("Lengths (words)", [p["words"] for p in points], x_label="words"),
            charts.histogram("Length score S_l", [p["length_score"] for p in points], low=0, high=100, x_label="S_l"),
            charts.scatter("Judge score vs length", [(p["words"], p["quality"], p["sample_id"]) for p in points
                                                     if p["quality"] is not None], x_label="words", y_label="S_q"),
        ) if c]
        return render("run.html", run=found, plots=plots)

    def samples(request: Request, reads: CorpusReads) -> HTMLResponse:
        f = _filter(request.query_params)
        return render("samples.html", page=reads.samples(f), f=f, facets=reads.facets(), sorts=list(SORTS),
                      query=dict(request.query_params))

    def sample(request: Request, reads: CorpusReads) -> HTMLResponse:
        found = reads.sample(request.path_params["sample_id"])
        if found is None:
            return not_found("sample", request.path_params["sample_id"])
        return render("sample.html", s=found, chart=charts.planned_vs_written(found["sections"]))

    def prompt(request: Request, reads: CorpusReads) -> HTMLResponse:
        found = reads.prompt(request.path_params["prompt_id"])
        if found is None:
            return not_found("prompt", request.path_params["prompt_id"])
        return render("prompt.html", p=found)

    def pair(request: Request, reads: CorpusReads) -> HTMLResponse:
        found = reads.pair(request.path_params["selection_id"])
        if found is None:
            return not_found("DPO pair", request.path_params["selection_id"])
        return render("pair.html", pair=found)

    def failures(request: Request, reads: CorpusReads) -> HTMLResponse:
        run_id = request.query_params.get("run") or None
        return render("failures.html", failures=reads.failures(run_id), run=run_id)

    def evals(request: Request, reads: CorpusReads) -> HTMLResponse:
        return render("evals.html", evals=reads.evals())

    def evaluation(request: Request, reads: CorpusReads) -> HTMLResponse:
        found = reads.eval(request.path_params["eval_id"])
        if found is None:
            return not_found("evaluation", request.path_params["eval_id"])
        answered = [a for a in found["answers"] if not a["error"]]
        plots = [c for c in (charts.scatter(f"Asked vs written: {m['model']}",
                                            [(a["required_words"], a["words"], a["prompt_id"]) for a in answered
                                             if a["model"] == m["model"]], x_label="asked", y_label="written")
                             for m in found["models"]) if c]
        return render("eval.html", e=found, plots=plots)

    return Starlette(routes=[
        Route("/", page(runs)),
        Route("/runs/{run_id}", page(run)),
        Route("/samples", page(samples)),
        Route("/samples/{sample_id}", page(sample)),
        Route("/prompts/{prompt_id}", page(prompt)),
        Route("/pairs/{selection_id}", page(pair)),
        Route("/failures", page(failures)),
        Route("/evals", page(evals)),
        Route("/evals/{eval_id}", page(evaluation)),
    ])


class BadParameter(ValueError):
    """A query parameter that is not what its filter takes; shown as a 400 page."""


def _filter(params) -> SampleFilter:
    def number(name: str) -> float | None:
        value = params.get(name)
        if value in (None, ""):
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadParameter(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(number):   # float() reads "nan" and "inf"; no filter or page can use them
            raise BadParameter(f"{name} must be a finite number, got {value!r}")
        return number

    selected = params.get("selected") or None
    if selected not in (None, "yes", "no"):
        raise BadParameter(f"selected must be yes or no, got {selected!r}")
    sort = params.get("sort") or "created"
    if sort not in SORTS:
        raise BadParameter(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    page = number("page")
    return SampleFilter(run=params.get("run") or None, writer=params.get("writer") or None,
                        prompt=params.get("prompt") or None, sl_min=number("sl_min"), sl_max=number("sl_max"),
                        selected=None if selected is None else selected == "yes",
                        failed_filter=params.get("failed") or None, sort=sort,
                        descending=params.get("dir", "desc") != "asc", page=int(page) if page else 1)
