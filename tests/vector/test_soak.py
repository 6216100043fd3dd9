"""Everything at once on one index: two writers (upserts that replace, deletes), readers, and
snapshots with huge-page upkeep, while the index's arrays grow past the C library's mapping
threshold (so `faiss_memory.Capacity` moves them with mremap) and a flat index compacts its
tombstones. Every read is whole, and the index, and a reload of it, ends exactly as written."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in

DIMS = 384
POOL = 20_000  # keys per writer: replacements and deletes leave tombstones to compact
BASE = np.random.default_rng(11).standard_normal((POOL, DIMS)).astype(np.float32)


def values_of(writer: int, keys: list[int], version: int) -> np.ndarray:
    """What a writer writes for `keys` at `version`: derived, so any reader can check it."""
    return BASE[keys] * np.float32(version % 7 + 1) + np.float32(writer)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec("flat", DIMS, Metric.COSINE),
        IndexSpec("graph", DIMS, Metric.COSINE, IndexType.HNSW, HnswParams(m=8, ef_construction=20, ef_search=32)),
    ],
    ids=lambda spec: spec.name,
)
def test_writes_deletes_reads_and_snapshots_together_keep_every_vector_whole(tmp_path: Path, spec: IndexSpec) -> None:
    index = FaissIndex(spec, tmp_path)
    index.load()
    stop = time.monotonic() + 5
    models: list[dict[int, int]] = [{}, {}]  # per writer: key -> version
    problems: list[str] = []

    def writer(number: int) -> None:
        rng, model = random.Random(number), models[number]
        version = 0
        while time.monotonic() < stop:
            version += 1
            if model and rng.random() < 0.15:
                gone = rng.sample(sorted(model), min(len(model), rng.randint(1, 300)))
                index.delete_keys(keys_in(str(number), [f"k{k}" for k in gone]))
                for k in gone:
                    del model[k]
                continue
            keys = rng.sample(range(POOL), rng.choice([1, 100, 1_000, 2_000]))
            index.write(
                VectorBatch(
                    keys_in(str(number), [f"k{k}" for k in keys]),
                    values_of(number, keys, version),
                    [{"v": version}] * len(keys),
                    [f'{{"v":{version}}}'] * len(keys),
                ),
                True,
            )
            model.update(dict.fromkeys(keys, version))

    def reader() -> None:
        rng = np.random.default_rng(5)
        while time.monotonic() < stop:
            for match in index.search_many(
                [SearchRequest(rng.standard_normal(DIMS).astype(np.float32), 10, True, True)]
            )[0]:
                assert match.metadata is not None and match.values is not None
                expected = values_of(int(match.key.namespace), [int(match.key.id[1:])], match.metadata["v"])[0]
                if not np.array_equal(match.values, expected):
                    problems.append(f"{match.key} read {match.values[:3]} for version {match.metadata['v']}")

    def maintainer() -> None:
        while time.monotonic() < stop:
            time.sleep(0.2)
            index.snapshot()
            index.tidy_memory(16 * 1024 * 1024)

    def guarded(work: object) -> threading.Thread:
        def run() -> None:
            try:
                work()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                problems.append(repr(exc))

        return threading.Thread(target=run)

    threads = [guarded(lambda n=n: writer(n)) for n in (0, 1)] + [guarded(reader), guarded(maintainer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []

    def check(current: FaissIndex) -> None:
        assert current.info().vector_count == sum(map(len, models))
        for number, model in enumerate(models):
            keys = sorted(model)
            records = {int(r.key.id[1:]): r for r in current.get_keys(keys_in(str(number), [f"k{k}" for k in keys]))}
            assert sorted(records) == keys
            for k in keys:
                assert records[k].metadata == {"v": model[k]}
                assert np.array_equal(records[k].values, values_of(number, [k], model[k])[0])

    check(index)
    index.close()
    again = FaissIndex(spec, tmp_path)
    again.load()
    check(again)
    again.close()
