"""Running a build: its session (store, run row, engine), which samples it writes, its inputs, shards,
the Prefect API it talks to, and the seam to whoever watches its progress."""
