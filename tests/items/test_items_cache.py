"""The bounded LRU behind the pixel caches (no database)."""

from __future__ import annotations

from medlabel.items.pixels import _LRU


def test_lru_is_bounded_by_bytes_and_evicts_least_recently_used():
    closed: list[str] = []
    lru = _LRU(100, on_evict=closed.append)
    lru.put("a", "A", 40)
    lru.put("b", "B", 40)
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("c", "C", 40)  # over 100: b goes
    assert lru.get("b") is None and lru.get("a") == "A" and lru.get("c") == "C"
    assert closed == ["B"] and lru.nbytes == 80 and len(lru) == 2
    lru.put("huge", "H", 101)  # bigger than the whole cache: not kept, nothing evicted
    assert lru.get("huge") is None and len(lru) == 2
    lru.put("a", "A2", 10)  # replacing counts the new size only, and lets go of the old value
    assert lru.nbytes == 50 and lru.get("a") == "A2" and closed == ["B", "A"]
    lru.clear()
    assert len(lru) == 0 and lru.nbytes == 0 and sorted(closed) == ["A", "A2", "B", "C"]
