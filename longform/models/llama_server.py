"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`), with one fix to how it
computes the log-probabilities judges ask for. Run as `python -m longform.models.llama_server ARGS…`;
the arguments are the server's own.

Why a fix and not another server: the server is right in everything else, and longform needs its
chat templates, grammars and prefix reuse as they are. What it does slowly (llama-cpp-python 0.3,
`Llama._create_completion`): for `logprobs`, it takes the log-softmax of every row of its logits
(prompt and answer: for a 3,000-token judge prompt, 3,000 × 49,152 floats, over half a gigabyte,
in several passes) and keeps only the answer's rows; then, per answer token, it sorts all 49,152
`(logprob, token)` pairs as numpy scalars in Python to find the top few. Measured here
(benchmarks/embedded_speed.py, issue 24): about 0.5 s per judge request for the first, and 0.1 s
per answer token for the second, so a 50-token rubric verdict spent 5 s choosing alternatives.

The fix keeps the same results and the same code path: the 2-D call returns the rows on demand,
each as a list of Python floats (which sort several times faster than numpy scalars). The
1-D calls (streaming) are left as they are.
"""

from __future__ import annotations

import numpy as np
from llama_cpp import Llama

_log_softmax = Llama.logits_to_logprobs


class _RowsOnDemand:
    """The log-softmax of each row of `logits`, computed when that row is read."""

    def __init__(self, logits: np.ndarray, start: int = 0):
        self._logits = logits
        self._start = start

    def __len__(self) -> int:
        return max(0, len(self._logits) - self._start)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1) and key.stop is None and (key.start or 0) >= 0:
            return _RowsOnDemand(self._logits, self._start + (key.start or 0))
        return _log_softmax(self._logits[self._start:][key])

    def __iter__(self):
        for row in self._logits[self._start:]:
            yield _log_softmax(row).tolist()


def logits_to_logprobs(logits, axis: int = -1):
    if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis in (-1, 1):
        return _RowsOnDemand(logits)
    return _log_softmax(logits, axis=axis)


Llama.logits_to_logprobs = staticmethod(logits_to_logprobs)


if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()
