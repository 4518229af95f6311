"""An OpenAI-compatible server that behaves like a GPU server with continuous batching, on a clock.

The model: `slots` requests run at once (excess requests queue, first come first served); a
request holds its slot for `prefill_ms × prompt tokens + decode_ms × generated tokens`, whatever
else is running, which is how a continuous-batching server looks below its saturation batch size.
A token is a whitespace-separated word, on both sides.

What it answers is a deterministic function of the request body, so a replay of the same requests
costs exactly the same:
- a JSON schema `response_format` gets a JSON object that satisfies it; an AgentWrite plan
  ("... about N words long") gets paragraphs of 150–650 words (or about `--sections` of them)
  that add up to N;
- otherwise text of the length the prompt asks for ("about N words"), ±10%, or 200 words, cut at
  `max_tokens` with `finish_reason = "length"`.

With `--prefix-cache-tokens N` it also has vLLM's automatic prefix caching: the prompt's tokens are
cut into blocks of 16, each identified by a hash chained over the blocks before it; the leading
blocks already in an LRU of N tokens' worth of blocks are not charged for prefill (only the rest
is), and every block of the prompt is then cached. The log records the prefill tokens charged.

A client that hangs up mid-request frees its slot, as vLLM aborts the request; the tokens it had
already cost are counted. Every request is logged with the task tag of its prompt (`[task N]`):
GET /stats returns the log, POST /reset clears it.

    python benchmarks/sim_server.py --port 8300 --slots 64 --decode-ms 1.0 --prefill-ms 0.005
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import time
from collections import OrderedDict

_WORDS_ASKED = re.compile(r"about (\d+) (?:more )?words")
_TAG = re.compile(r"\[task (\d+)\]")
_VOCAB = ("harbour river stone light garden letter window market bridge autumn lantern meadow signal winter "
          "orchard compass valley engine archive theory method result measure pattern village merchant "
          "journey season forest answer question history science future council treaty voyage").split()


class Text:
    """Slices of one long pseudo-random text: producing N words costs a string slice, not N choices."""

    def __init__(self, words: int = 200_000, seed: int = 7):
        rng = random.Random(seed)
        tokens = [rng.choice(_VOCAB) + ("." if rng.random() < 0.07 else "") for _ in range(words)]
        self._text = " ".join(tokens)
        self._starts = [0]
        for t in tokens:
            self._starts.append(self._starts[-1] + len(t) + 1)
        self._n = words

    def words(self, n: int, offset: int) -> str:
        parts, offset = [], offset % (self._n // 2)
        while n > 0:
            take = min(n, self._n - offset)
            parts.append(self._text[self._starts[offset]:self._starts[offset + take] - 1])
            n -= take
            offset = 0
        return " ".join(parts)


class PrefixCache:
    """vLLM-style automatic prefix caching over whitespace tokens: chained block hashes in an LRU."""

    BLOCK = 16

    def __init__(self, capacity_tokens: int):
        self._capacity = max(1, capacity_tokens // self.BLOCK)
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def admit(self, tokens: list[str]) -> int:
        """How many leading tokens of this prompt were cached; then cache all of its full blocks."""
        chained, cached, matching = b"", 0, True
        for start in range(0, len(tokens) - self.BLOCK + 1, self.BLOCK):
            chained = hashlib.blake2b(chained + " ".join(tokens[start:start + self.BLOCK]).encode(),
                                      digest_size=12).digest()
            if matching and chained in self._blocks:
                cached += self.BLOCK
            else:
                matching = False
            self._blocks[chained] = None
            self._blocks.move_to_end(chained)
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)
        return cached


class SimServer:
    def __init__(self, slots: int, decode_ms: float, prefill_ms: float, model: str = "sim", sections: int = 0,
                 prefix_cache_tokens: int = 0):
        self.prefix_cache = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens else None
        self.slots = slots
        self.sections = sections
        self.decode_s = decode_ms / 1000
        self.prefill_s = prefill_ms / 1000
        self.model = model
        self.text = Text()
        self.log: list[dict] = []
        self._queue = asyncio.Semaphore(slots)
        self._epoch = time.time() - time.monotonic()

    def cost_s(self, tokens_in: int, tokens_out: int) -> float:
        return self.prefill_s * tokens_in + self.decode_s * tokens_out

    # --- what the "model" answers ----------------------------------------------------------------

    def answer(self, body: dict) -> tuple[str, int, str, str, int]:
        """(text, tokens_in, finish_reason, tag, prefill tokens charged) for a chat or completions body."""
        if "messages" in body:
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
            last = str(body["messages"][-1].get("content", ""))
        else:
            prompt = last = str(body.get("prompt", ""))
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
        tag = _TAG.search(prompt)
        prompt_tokens = prompt.split()
        tokens_in = len(prompt_tokens)
        prefill = tokens_in - (self.prefix_cache.admit(prompt_tokens) if self.prefix_cache else 0)
        max_tokens = int(body.get("max_tokens") or 4096)
        asked = [int(n) for n in _WORDS_ASKED.findall(last)]
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema") \
            or (body.get("response_format") or {}).get("schema")
        if schema is not None:
            text = json.dumps(self._fill(schema, digest, asked[0] if asked else 2000))
        else:
            n = round((asked[-1] if asked else 200) * (0.9 + 0.2 * digest[0] / 255))
            text = self.text.words(n, int.from_bytes(digest[1:5], "big"))
        words = text.split()
        finish = "stop"
        if len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        return text, tokens_in, finish, tag.group(1) if tag else "", prefill

    def _fill(self, schema: dict, digest: bytes, words: int) -> object:
        props = schema.get("properties", {})
        if "paragraphs" in props:
            rng = random.Random(digest)
            paragraphs, left = [], words
            while left > 0:
                if self.sections:  # about `sections` paragraphs whatever the length
                    n = min(left, max(10, round(words / self.sections * rng.uniform(0.7, 1.3))))
                else:
                    n = min(left, rng.randint(150, 650))
                paragraphs.append({"main_point": f"Part {len(paragraphs) + 1}: " + self.text.words(12, rng.randrange(10**6)),
                                   "word_count": n})
                left -= n
            return {"paragraphs": paragraphs}
        return {name: _value(spec, digest[i % len(digest)]) for i, (name, spec) in enumerate(props.items())}

    # --- HTTP --------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = dict((k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln))
                size = int(headers.get("content-length", 0))
                raw = await reader.readexactly(size) if size else b""
                reply = await self.route(method, path.split("?")[0], raw, reader)
                if reply is None:  # the client hung up
                    return
                code, payload = reply
                data = json.dumps(payload).encode()
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % (code, b"OK" if code == 200 else b"ERR", len(data)) + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def route(self, method: str, path: str, raw: bytes, reader: asyncio.StreamReader):
        if path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "sim"}]}
        if path == "/stats":
            return 200, {"slots": self.slots, "decode_s": self.decode_s, "prefill_s": self.prefill_s, "log": self.log}
        if path == "/reset":
            self.log = []
            return 200, {"ok": True}
        if method == "POST" and path.endswith(("/chat/completions", "/completions")):
            return await self.complete(json.loads(raw), reader, chat=path.endswith("/chat/completions"))
        return 404, {"error": {"message": f"no route {path}"}}

    async def complete(self, body: dict, reader: asyncio.StreamReader, chat: bool):
        arrived = time.monotonic()
        text, tokens_in, finish, tag, prefill = self.answer(body)
        tokens_out = len(text.split())
        cost = self.cost_s(prefill, tokens_out)
        async with self._queue:
            started = time.monotonic()
            hangup = asyncio.ensure_future(reader.read(1))
            work = asyncio.ensure_future(asyncio.sleep(cost))
            await asyncio.wait({hangup, work}, return_when=asyncio.FIRST_COMPLETED)
            aborted = not work.done()
            for waiting in (hangup, work):
                waiting.cancel()
                # The next request on this connection may only be read once this read is gone.
                await asyncio.gather(waiting, return_exceptions=True)
            ended = time.monotonic()
        done = 1.0 if not aborted else min(1.0, (ended - started) / cost if cost else 1.0)
        self.log.append({"tag": tag, "arrived": arrived + self._epoch, "started": started + self._epoch,
                         "ended": ended + self._epoch, "tokens_in": tokens_in, "prefill_tokens": prefill,
                         "tokens_out": tokens_out,
                         "cost_s": cost, "done": round(done, 4), "aborted": aborted,
                         "json": "response_format" in body})
        if aborted:
            return None
        usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        created = int(time.time())
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return 200, {"id": "sim", "object": "chat.completion", "created": created, "model": self.model,
                         "choices": [choice], "usage": usage}
        return 200, {"id": "sim", "object": "text_completion", "created": created, "model": self.model,
                     "choices": [{"index": 0, "text": text, "finish_reason": finish}], "usage": usage}


def _value(spec: dict, byte: int) -> object:
    if "enum" in spec:
        return spec["enum"][byte % len(spec["enum"])]
    kind = spec.get("type")
    if kind == "integer":
        return spec.get("minimum", 0) + byte % 5
    if kind == "number":
        return byte / 255
    if kind == "boolean":
        return bool(byte % 2)
    if kind == "array":
        return [_value(spec.get("items", {}), byte + i) for i in range(max(1, spec.get("minItems", 1)))]
    if kind == "object":
        return {k: _value(v, byte + i) for i, (k, v) in enumerate(spec.get("properties", {}).items())}
    return "text"


async def serve(args: argparse.Namespace) -> None:
    sim = SimServer(args.slots, args.decode_ms, args.prefill_ms, sections=args.sections,
                    prefix_cache_tokens=args.prefix_cache_tokens)
    server = await asyncio.start_server(sim.handle, "127.0.0.1", args.port, backlog=4096, limit=1 << 16)
    print(f"ready http://127.0.0.1:{args.port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--decode-ms", type=float, default=1.0, help="per generated token")
    parser.add_argument("--prefill-ms", type=float, default=0.005, help="per prompt token")
    parser.add_argument("--sections", type=int, default=0, help="paragraphs per plan (0: 150-650 words each)")
    parser.add_argument("--prefix-cache-tokens", type=int, default=0, help="automatic prefix cache size (0: none)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
