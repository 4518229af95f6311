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
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import duckdb
import httpx

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
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="longform-live-reads", daemon=True)

    def start(self) -> "QueryServer":
        self._thread.start()
        fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": self._httpd.server_address[1], "token": self._token}, f)
        return self

    def stop(self) -> None:
        self._file.unlink(missing_ok=True)
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, sql: str, params: list) -> dict:
        cursor = self._con.cursor()  # a cursor per thread: DuckDB connections are not thread-safe
        try:
            self._check(cursor, sql)
            result = cursor.execute(sql, params)
            columns = [d[0] for d in result.description] if result.description else []
            return {"columns": columns, "rows": result.fetchall() if columns else []}
        finally:
            cursor.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {server._token}":
                    return self._reply(403, {"error": "bad token"})
                try:
                    asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._reply(200, server._answer(asked["sql"], asked.get("params") or []))
                except Exception as e:  # the client turns it into a one-line error
                    self._reply(400, {"error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})

            def _reply(self, code: int, payload: dict) -> None:
                data = json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


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
    payload = response.json()
    if response.status_code != 200:
        raise LiveReadError(payload.get("error", f"HTTP {response.status_code}"))
    return payload["columns"], [tuple(row) for row in payload["rows"]]
