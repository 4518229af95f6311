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

The second fix is to prefill. The server must be started with `logits_all` for `logprobs` to be
allowed at all, and then llama.cpp computes the output layer for every prompt token (49,152 × 576
weights each, about a quarter of SmolLM2-135M's work per token) and llama-cpp-python copies every
row into `Llama.scores`, although only the rows from the prompt's last token on are ever read
(`_create_completion` slices `scores[len(prompt) - 1:]` unless `echo` is set). Measured here with
two threads (issue 24): prefill 155 → 227 tokens/s, decode 91 → 107 tokens/s. `eval` below asks
llama.cpp for the logits of each batch's last token only and stores that row: what sampling and
the answer's log-probabilities read. The one request that would read a prompt row, `echo` with
`logprobs`, is refused with a message instead of answered from rows never computed.

The third fix is to the answer's alternatives. For each answer token `_create_completion` runs
`sorted(zip(row, range(len(row))), reverse=True)` over the whole vocabulary, 49,152 (logprob, token)
pairs in Python, and reads the first `logprobs` of them: 57 ms a token here, so a 50-token rubric
verdict with `top_logprobs` took 5.4 s instead of 0.9 s (issue 24). `sorted`, as that module sees it,
is given the same answer for the rows served here (`_Row`) from numpy: the candidates at or above the
20th-largest value, sorted as Python sorts them (ties by the higher token id), cut to the top 20.
The OpenAI API caps `top_logprobs` at 20 and the loop reads no further, so a request for more is
refused with a message, like `echo` above.
"""

from __future__ import annotations

import builtins

import llama_cpp.llama
import numpy as np
from llama_cpp import Llama

_log_softmax = Llama.logits_to_logprobs

TOP_LOGPROBS_MAX = 20   # OpenAI's limit on `top_logprobs`


class _Row(list):
    """One row of log-probabilities as Python floats (what the loop indexes), with its numpy array."""

    def __init__(self, array: np.ndarray):
        super().__init__(array.tolist())
        self.array = array


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
            yield _Row(_log_softmax(row))


def logits_to_logprobs(logits, axis: int = -1):
    if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis in (-1, 1):
        return _RowsOnDemand(logits)
    return _log_softmax(logits, axis=axis)


Llama.logits_to_logprobs = staticmethod(logits_to_logprobs)


def _row_pairs(iterable) -> _Row | None:
    """The row in `zip(row, range(len(row)))`, untouched (both iterators at their start), if `row` is
    a `_Row`: the one shape llama-cpp-python's loop sorts."""
    if type(iterable) is not zip:
        return None
    parts = iterable.__reduce__()[1]
    if len(parts) != 2:
        return None
    rows, ids = (part.__reduce__() if hasattr(part, "__reduce__") else () for part in parts)
    if len(rows) != 3 or len(ids) != 3 or rows[2] != 0 or ids[2] != 0:
        return None
    row, span = rows[1][0], ids[1][0]
    if not isinstance(row, _Row) or span != range(len(row)):
        return None
    return row


def sorted_top(iterable, /, *, key=None, reverse=False):
    """`builtins.sorted`, except for the (logprob, token id) pairs of a `_Row` in descending order:
    their first TOP_LOGPROBS_MAX, the same as a full sort gives, without sorting the vocabulary."""
    row = _row_pairs(iterable) if key is None and reverse else None
    if row is None:
        return builtins.sorted(iterable, key=key, reverse=reverse)
    n = len(row)
    top = min(TOP_LOGPROBS_MAX, n)
    if top == 0:
        return []
    floor = np.partition(row.array, n - top)[n - top]
    candidates = np.flatnonzero(row.array >= floor).tolist()   # ties at the floor all kept
    return builtins.sorted(((row[i], i) for i in candidates), reverse=True)[:top]


llama_cpp.llama.sorted = sorted_top   # a module global: `sorted` inside llama_cpp.llama only


_eval_every_row = Llama.eval


def eval_last_rows(self: Llama, tokens) -> None:
    """`Llama.eval` (llama-cpp-python 0.3.36) with logits for the last token of each batch only."""
    self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
    for i in range(0, len(tokens), self.n_batch):
        batch = tokens[i:min(len(tokens), i + self.n_batch)]
        n_past, n_tokens = self.n_tokens, len(batch)
        self._batch.set_batch(batch=batch, n_past=n_past, logits_all=False)
        self._ctx.decode(self._batch)
        self.input_ids[n_past:n_past + n_tokens] = batch
        if self._logits_all:
            self.scores[n_past + n_tokens - 1, :] = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(self._n_vocab,))
        self.n_tokens += n_tokens
        self._requires_eval = False


_create_completion = Llama._create_completion


def create_completion_without_prompt_rows(self: Llama, prompt, *args, **kwargs):
    if kwargs.get("echo") and kwargs.get("logprobs") is not None:
        raise ValueError("echo with logprobs is not served: this server computes no prompt logits"
                         " (longform/models/llama_server.py)")
    if (kwargs.get("logprobs") or 0) > TOP_LOGPROBS_MAX:
        raise ValueError(f"logprobs over {TOP_LOGPROBS_MAX} is not served (the OpenAI API's limit;"
                         " longform/models/llama_server.py)")
    return _create_completion(self, prompt, *args, **kwargs)


Llama.eval = eval_last_rows
Llama._create_completion = create_completion_without_prompt_rows


if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()
