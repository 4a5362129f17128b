"""`Idempotency-Key` on the endpoints that make jobs (POST /v1/jobs, POST /v1/3d/generations): a request sent again
with the key of an earlier one makes no new job; it is answered with the first request's jobs as they stand (or, on
the OpenAI-style endpoint, once they end, as the first answer would have been). Clients that retry after a lost
answer or a timeout (the `openai` package, HTTP libraries' retry policies) thus never run a generation twice.

The keys live in the server's memory for KEEP_S (the IETF draft "The Idempotency-Key HTTP Header Field" leaves the
time to the server), at most MAX_KEYS of them, each bound to its endpoint and to a fingerprint of what its request
asked for: the same key with other inputs or settings is a 422, as the draft advises, not a silent replay.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Optional

from .common import ApiError

HEADER = "idempotency-key"
MAX_KEY_CHARS = 255
KEEP_S = 24 * 3600.0
MAX_KEYS = 10_000
REPLAYED = {"Idempotent-Replayed": "true"}       # the header of an answer that replays an earlier request's jobs


def fingerprint(*parts) -> str:
    """A digest of what a request asks for: bytes as they are, anything else by its repr (dicts sorted)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            data = bytes(part)
        elif isinstance(part, dict):
            data = repr(sorted(part.items())).encode()
        else:
            data = repr(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def request_key(request) -> Optional[str]:
    """The request's Idempotency-Key (None without one); 400 when it cannot be one."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    key = values[0].strip()
    if len(values) > 1 or not key or len(key) > MAX_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise ApiError(400, f"Idempotency-Key: give one key of 1..{MAX_KEY_CHARS} printable ASCII characters "
                            "(e.g. a UUID) per request")
    return key


class IdempotencyKeys:
    """(endpoint, key) -> (fingerprint, job ids), oldest first, for KEEP_S, at most MAX_KEYS. Used from the event loop
    only: a look-up and the remember that follows it with no await between them cannot interleave with another's."""

    def __init__(self, keep_s: float = KEEP_S, max_keys: int = MAX_KEYS, clock=time.monotonic):
        self.keep_s, self.max_keys, self.clock = keep_s, max_keys, clock
        self.entries: OrderedDict = OrderedDict()

    def _expire(self) -> None:
        now = self.clock()
        while self.entries:
            _, (_, _, made) = next(iter(self.entries.items()))
            if now - made <= self.keep_s and len(self.entries) <= self.max_keys:
                break
            self.entries.popitem(last=False)

    def job_ids(self, endpoint: str, key: Optional[str], digest: str) -> Optional[list]:
        """The job ids an earlier request with `key` made here (None: none did); 422 when it asked for other
        things."""
        if key is None:
            return None
        self._expire()
        found = self.entries.get((endpoint, key))
        if found is None:
            return None
        if found[0] != digest:
            raise ApiError(422, f"Idempotency-Key {key!r} was used by an earlier request with other inputs or "
                                "settings: use a new key for a new request", error_kind="idempotency_key_reused")
        return list(found[1])

    def remember(self, endpoint: str, key: Optional[str], digest: str, job_ids: list) -> None:
        if key is None:
            return
        self.entries[(endpoint, key)] = (digest, tuple(job_ids), self.clock())
        self.entries.move_to_end((endpoint, key))
        self._expire()


def replayed_jobs(state, endpoint: str, key: Optional[str], digest: str) -> Optional[list]:
    """The jobs of an earlier request with `key` (None: make new ones), as far as the runner still knows them."""
    ids = state.idempotency.job_ids(endpoint, key, digest)
    if ids is None:
        return None
    jobs = [state.runner.get(i) for i in ids]
    return jobs if all(j is not None for j in jobs) else None
