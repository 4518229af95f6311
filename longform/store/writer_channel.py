"""Answering read-only queries while a build holds the database.

Once a process has a DuckDB file open for writing, no other process can open it, so
`longform query` from another terminal could only say "try later". Instead the writing process
answers: it listens on loopback and runs each query on a cursor of its own, which sees every
committed batch (the writer commits at least once a second). Its address and a random token are
published beside the database in a file only the owner can read; the file goes when the writer
closes, and a stale one (a killed writer) is simply unreachable.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

import duckdb
import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longform.loopback import LoopbackServer

Columns = list[str]
Rows = list[list]


def address_file(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".reader")


class QueryServer:
    def __init__(self, con: duckdb.DuckDBPyConnection, db_path: Path, check: Callable[[duckdb.DuckDBPyConnection, str], None]):
        self._con = con
        self._file = address_file(db_path)
        self._check = check
        self._token = secrets.token_hex(16)
        app = Starlette(routes=[Route("/query", self._query, methods=["POST"])])
        self._http = LoopbackServer(app, name="longform-live-reads")

    def start(self) -> "QueryServer":
        self._http.start()
        fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": self._http.port, "token": self._token}, f)
        return self

    def stop(self) -> None:
        self._file.unlink(missing_ok=True)
        self._http.stop()

    async def _query(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {self._token}":
            return JSONResponse({"error": "bad token"}, status_code=403)
        try:
            asked = await request.json()
            # On a worker thread: the query may take a while, and the event loop serves other readers.
            answer = await run_in_threadpool(self._answer, asked["sql"], asked.get("params") or [])
        except Exception as e:  # the client turns it into a one-line error
            return JSONResponse({"error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__},
                                status_code=400)
        # default=str: dates, decimals and the like as their text, as `longform query` prints them.
        return Response(json.dumps(answer, default=str, ensure_ascii=False), media_type="application/json")

    def _answer(self, sql: str, params: list) -> dict:
        cursor = self._con.cursor()  # a cursor per thread: DuckDB connections are not thread-safe
        try:
            self._check(cursor, sql)
            result = cursor.execute(sql, params)
            columns = [d[0] for d in result.description] if result.description else []
            return {"columns": columns, "rows": result.fetchall() if columns else []}
        finally:
            cursor.close()


class LiveReadError(Exception):
    """The writer refused or failed the query; the message is one line."""


def ask_writer(db_path: Path, sql: str, params: list | None = None,
               timeout_s: float = 60.0) -> tuple[Columns, Rows] | None:
    """The writer's answer, or None when no writer is reachable. `params` bind `?` placeholders."""
    try:
        info = json.loads(address_file(db_path).read_text())
        body = json.dumps({"sql": sql, "params": params or []}, default=str).encode("utf-8")
        response = httpx.post(f"http://127.0.0.1:{info['port']}/query", content=body,
                              headers={"Authorization": f"Bearer {info['token']}"}, timeout=timeout_s)
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not ({"columns", "rows"} <= payload.keys() or "error" in payload):
        return None  # a stale address file: its port now belongs to another program
    if response.status_code != 200:
        raise LiveReadError(payload.get("error", f"HTTP {response.status_code}"))
    return payload["columns"], [tuple(row) for row in payload["rows"]]
