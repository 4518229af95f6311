"""`longform view`: a local, read-only web page for reading and auditing a corpus."""
