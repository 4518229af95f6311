"""The store: the one package that holds SQL (besides `longform query`, which runs the user's).

database.py   the Store a build writes: buffered appends, the journal, a few direct writes
build_reads.py  named reads the pipeline's stages make (mixed into Store)
browsing.py    named reads of a whole corpus for the CLI, the viewer and the report
reading.py    reading from any process, also while a build holds the file (writer_channel.py)
opening.py    the writer's lock and migrations (schema.py)
"""

from longform.store.database import Store
from longform.store.opening import DatabaseBusy
from longform.store.sql_guard import Query, check_read_only
from longform.store.read_access import read_query, reading

__all__ = ["DatabaseBusy", "Query", "Store", "check_read_only", "read_query", "reading"]
