"""The store: the one package that holds SQL (besides `longform query`, which runs the user's).

database.py       Store: opening, closing, the request cache and its reads; mixes in the next three
appends.py        the append buffer: journaled rows committed as Arrow batches, on a timer too
bookkeeping.py    the few direct writes (runs, counters, training runs, evaluations)
build_reads.py    named reads a build's stages make of the database they write
shard_merge.py    merging a finished shard's database, idempotently
browsing.py       named reads of a whole corpus for `status`, `report` and the viewer
read_access.py    reading from any process, also while a build holds the file (writer_channel.py)
writer_channel.py a long-lived writer answering other processes' read-only queries over loopback
sql_guard.py      what a read-only query may be (SELECT, EXPLAIN)
journal.py        the journal that survives kill -9; chunked_text.py: long texts stored once
opening.py        the writer's lock and applying migrations (migrations.py; schema.py: their shape)
"""

from longform.store.database import Store
from longform.store.opening import DatabaseBusy
from longform.store.sql_guard import Query, check_read_only
from longform.store.read_access import read_query, reading

__all__ = ["DatabaseBusy", "Query", "Store", "check_read_only", "read_query", "reading"]
