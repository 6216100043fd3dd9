"""An object's ETag hashed beside its writes is the MD5 of its bytes, whatever the chunking."""

from __future__ import annotations

import hashlib
import os
import threading

from services.blob.backends.md5_stream import INLINE_BYTES, Md5Stream


def test_chunks_of_every_size_hash_in_order() -> None:
    sizes = [0, 1, INLINE_BYTES - 1, INLINE_BYTES, 3 * INLINE_BYTES + 5, 7, 1 << 20, 2]
    chunks = [os.urandom(size) for size in sizes]
    stream = Md5Stream()
    for chunk in chunks:
        stream.update(chunk)
    assert stream.hexdigest() == hashlib.md5(b"".join(chunks)).hexdigest()
    assert Md5Stream().hexdigest() == hashlib.md5(b"").hexdigest()


def test_streams_hashed_at_once_on_many_threads_stay_apart() -> None:
    results: dict[int, tuple[str, str]] = {}

    def put(number: int) -> None:
        chunks = [os.urandom(INLINE_BYTES * (1 + (number + i) % 3)) for i in range(40)]
        stream = Md5Stream()
        for chunk in chunks:
            stream.update(chunk)
        results[number] = (stream.hexdigest(), hashlib.md5(b"".join(chunks)).hexdigest())

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(ours == theirs for ours, theirs in results.values())


def test_a_stream_given_up_on_can_be_closed_mid_chunk() -> None:
    stream = Md5Stream()
    stream.update(os.urandom(4 << 20))
    stream.close()  # waits for the chunk in flight; nothing is left running for it
    stream.close()
