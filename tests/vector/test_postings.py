"""The inverted index over metadata: a batch indexed at once matches the same batch indexed one
vector at a time, whatever the values' types."""

from __future__ import annotations

import random
from typing import Any

from services.vector.backends.faiss_postings import Postings
from services.vector.filters import parse

VALUES: list[Any] = ["a", "b", "", "1", 1, 1.0, 2, -0.5, True, False, None, [1, "a"], {"x": 1, "y": {"z": "a"}}]
NAMES = ["k", "n", "deep", "a.b", "é"]


def _random_metadata(rng: random.Random) -> dict[str, Any]:
    return {name: rng.choice(VALUES) for name in rng.sample(NAMES, rng.randint(0, len(NAMES)))}


def test_a_batch_is_indexed_as_its_vectors_would_be_one_by_one() -> None:
    rng = random.Random(7)
    for _ in range(50):
        metadata = [_random_metadata(rng) for _ in range(rng.randint(1, 40))]
        ids = list(range(1000, 1000 + len(metadata)))
        one_by_one, batched = Postings(), Postings()
        for internal_id, fields in zip(ids, metadata, strict=True):
            one_by_one.add(internal_id, fields)
        batched.add_many(ids, metadata)
        assert batched.by_path == one_by_one.by_path


def test_batches_add_to_what_is_indexed_and_numbers_match_across_types() -> None:
    postings = Postings()
    postings.add_many([1, 2, 3], [{"n": 1}, {"n": 1.0}, {"n": True}])
    postings.add_many([4, 5], [{"n": 1, "s": "x"}, {"s": "x"}])
    everything = {1, 2, 3, 4, 5}
    assert postings.evaluate(parse({"n": 1}), lambda: everything) == {1, 2, 4}
    assert postings.evaluate(parse({"n": True}), lambda: everything) == {3}
    assert postings.evaluate(parse({"s": "x"}), lambda: everything) == {4, 5}
    assert postings.evaluate(parse({"n": {"$gte": 1}}), lambda: everything) == {1, 2, 4}


def test_a_value_held_by_one_vector_maps_to_its_id_and_filters_alike() -> None:
    postings = Postings()
    postings.add_many([1, 2, 3], [{"n": 1, "u": "a"}, {"n": 2, "u": "b"}, {"n": 2, "u": "c"}])
    assert postings.by_path["u"] == {("s", "a"): 1, ("s", "b"): 2, ("s", "c"): 3}  # no set of one
    everything = {1, 2, 3, 4}
    postings.add(4, {"n": 1, "u": "a"})  # a second holder: now a set
    assert postings.by_path["u"][("s", "a")] == {1, 4}
    for where, expected in (
        ({"u": "b"}, {2}),
        ({"u": {"$ne": "b"}}, {1, 3, 4}),
        ({"u": {"$in": ["a", "c", "zz"]}}, {1, 3, 4}),
        ({"u": {"$nin": ["a"]}}, {2, 3}),
        ({"u": {"$gt": "a"}}, {2, 3}),
        ({"n": {"$lte": 1}}, {1, 4}),
        ({"$or": [{"u": "c"}, {"n": 1}]}, {1, 3, 4}),
    ):
        assert postings.evaluate(parse(where), lambda: everything) == expected, where
    postings.remove(1, {"n": 1, "u": "a"})
    assert postings.by_path["u"][("s", "a")] == 4  # back to one holder
    postings.remove(4, {"n": 1, "u": "a"})
    postings.remove(2, {"n": 2, "u": "b"})
    postings.remove(2, {"n": 2, "u": "b"})  # removing twice changes nothing
    assert postings.by_path == {"u": {("s", "c"): 3}, "n": {("n", 2.0): 3}}
    assert postings.evaluate(parse({"u": "a"}), lambda: {3}) == set()
