"""The sorted keys behind ListVectors: kept up to date by folding in writes, in byte order."""

from __future__ import annotations

import random

from services.vector.backends import faiss_order
from services.vector.backends.faiss_order import KeyOrder
from services.vector.model import VectorKey


def test_natural_order_is_the_utf8_byte_order() -> None:
    texts = ["", "a", "z", "é", "ß", "\u4e2d", "\U0001f600", "\uffff", "A", "ab"]
    keys = [VectorKey(ns, vid) for ns in texts[:4] for vid in texts]
    assert sorted(keys) == sorted(keys, key=lambda k: (k.namespace.encode(), k.id.encode()))


def test_folded_changes_match_a_fresh_sort(monkeypatch) -> None:
    monkeypatch.setattr(faiss_order, "FOLD_LIMIT", 50)  # also exercise dropping the list
    rng = random.Random(5)
    live: set[VectorKey] = set()
    order = KeyOrder()
    for _ in range(400):
        step = rng.random()
        if step < 0.45:
            added = {VectorKey(rng.choice("ab"), f"k{rng.randrange(300)}") for _ in range(rng.randrange(1, 20))}
            order.changed(added=added - live)
            live |= added
        elif step < 0.8:
            removed = set(rng.sample(sorted(live), min(len(live), rng.randrange(1, 10))))
            order.changed(removed=removed)
            live -= removed
        else:
            held = order.keys(lambda live=live: set(live))
            snapshot = list(held)
            assert held == sorted(live)
            gone = set(list(live)[:1])
            live -= gone
            new = {VectorKey("c", "new")} - live
            order.changed(added=new, removed=gone)
            live |= new
            assert order.keys(lambda live=live: set(live)) == sorted(live)
            assert held == snapshot  # a list handed out is never changed afterwards
    assert order.keys(lambda live=live: set(live)) == sorted(live)
