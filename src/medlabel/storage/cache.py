"""Short-lived in-process caches of database facts that every request reads (who a session
token belongs to, a user's roles in a project, an item's row), with immediate invalidation.

* An entry lives ``MEDLABEL_ACCESS_CACHE_SECONDS`` (default 2 s; 0 turns caching off), and is
  kept per engine (so two runtimes in one process never share entries). Past half its life the
  first reader is sent to the database to renew it while the others still use it.
* Any change to a watched row made through the ORM in *this* process invalidates the entries it
  touches at once: at flush, and again after the commit or rollback. Bulk ORM ``UPDATE`` /
  ``DELETE`` statements on a watched class drop the whole cache.
* A value read from the database is stored only if nothing was invalidated since the reading
  transaction began (a per-engine generation counter), and never from a transaction that itself
  changed a watched row — so a stale or uncommitted value cannot be put back after an
  invalidation, whatever the isolation level.
* Other processes (``medlabel serve --workers N``, a separate ``medlabel worker``) see a change
  at most one TTL later: that is the cross-process staleness bound (``docs/operations.md``).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Engine, event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

__all__ = ["ALL", "RowCache", "cache_ttl", "set_cache_ttl", "engine_of", "root_engine", "has_changes"]


class _All:
    def __repr__(self) -> str:
        return "ALL"


ALL: Final = _All()
"""A watcher's answer meaning 'drop every entry' (or 'every entry matching a predicate')."""

Keys = Iterable[Hashable] | _All | Callable[[Any, Any], bool]
Watcher = Callable[[Any], Keys]


def _env_ttl() -> float:
    raw = os.environ.get("MEDLABEL_ACCESS_CACHE_SECONDS", "")
    try:
        return max(0.0, float(raw)) if raw else 2.0
    except ValueError:
        return 2.0


_ttl = _env_ttl()


def cache_ttl() -> float:
    return _ttl


def set_cache_ttl(seconds: float) -> None:
    """Change the TTL of every cache (tests; ``0`` turns caching off)."""
    global _ttl
    _ttl = max(0.0, float(seconds))
    for c in list(_CACHES):
        c.clear_all()


def root_engine(engine: Any) -> Engine | None:
    """The engine behind an option engine (read-only sessions) or a connection."""
    engine = getattr(engine, "engine", engine)
    while getattr(engine, "_proxied", None) is not None:
        engine = engine._proxied
    return engine if isinstance(engine, Engine) else None


def engine_of(session: Session) -> Engine | None:
    try:
        return root_engine(session.get_bind())
    except Exception:  # noqa: BLE001  (an unbound session has nothing cached)
        return None


@dataclass
class _Generation:
    value: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_generations: weakref.WeakKeyDictionary[Engine, _Generation] = weakref.WeakKeyDictionary()
_gen_guard = threading.Lock()


def _generation(engine: Engine) -> _Generation:
    g = _generations.get(engine)
    if g is None:
        with _gen_guard:
            g = _generations.setdefault(engine, _Generation())
    return g


_CACHES: list[RowCache] = []
_BEGIN_KEY = "medlabel_cache_generation"
_PENDING_KEY = "medlabel_cache_pending"


class RowCache:
    """A TTL cache of facts read from the database, keyed per engine.

    ``watch`` maps ORM classes to functions of a changed instance that return the keys to drop:
    an iterable of keys, :data:`ALL`, or a predicate ``(key, value) -> bool``.
    """

    def __init__(self, name: str, watch: dict[type, Watcher], max_entries: int = 50_000) -> None:
        self.name = name
        self.watch = watch
        self.max_entries = max_entries
        self._stores: weakref.WeakKeyDictionary[Engine, dict[Hashable, tuple[float, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._refreshing: dict[Hashable, float] = {}
        _CACHES.append(self)

    # ------------------------------------------------------------ reads
    def get(self, engine: Engine | None, key: Hashable) -> Any | None:
        """The cached value, or None (absent, expired, or caching off). No database access."""
        if engine is None or _ttl <= 0:
            return None
        store = self._stores.get(engine)
        if store is None:
            return None
        found = store.get(key)
        if found is None:
            return None
        now = time.monotonic()
        age = now - found[0]
        if age > _ttl:
            with self._lock:
                if store.get(key) is found:
                    del store[key]
            return None
        if age > _ttl / 2:
            # Refresh ahead: the first reader past half the TTL gets a miss and reads the
            # database (its put renews the entry); the others keep the entry meanwhile, so a
            # busy key never expires under all its readers at once.
            with self._lock:
                claimed = self._refreshing.get(key)
                if claimed is None or now - claimed > _ttl / 2:
                    self._refreshing[key] = now
                    return None
        return found[1]

    def get_in(self, session: Session, key: Hashable) -> Any | None:
        """:meth:`get` for a read inside ``session``: None when the session holds changes to a
        watched class (flushed or not), so a transaction always reads its own writes."""
        if _ttl <= 0 or has_changes(session, self):
            return None
        return self.get(engine_of(session), key)

    def put(self, session: Session, key: Hashable, value: Any) -> bool:
        """Store ``value`` read through ``session``, unless something was invalidated since the
        session's transaction began or the session itself changed a watched row."""
        if _ttl <= 0:
            return False
        engine = engine_of(session)
        began = session.info.get(_BEGIN_KEY)
        if engine is None or began is None or has_changes(session, self):
            return False
        gen = _generation(engine)
        with gen.lock:
            if gen.value != began:
                return False
            with self._lock:
                store = self._stores.get(engine)
                if store is None:
                    store = self._stores.setdefault(engine, {})
                if len(store) >= self.max_entries:
                    store.clear()
                    self._refreshing.clear()
                store[key] = (time.monotonic(), value)
                self._refreshing.pop(key, None)
        return True

    def swap(self, engine: Engine | None, key: Hashable, old: Any, new: Any) -> bool:
        """Replace the entry for ``key`` by ``new`` if it still holds ``old`` (the same object),
        keeping its age: for a value this process just wrote itself."""
        if engine is None:
            return False
        with self._lock:
            store = self._stores.get(engine)
            found = store.get(key) if store else None
            if store is None or found is None or found[1] is not old:
                return False
            store[key] = (found[0], new)
            return True

    # ------------------------------------------------------------ invalidation
    def invalidate(self, engine: Engine | None, keys: Keys) -> None:
        if engine is None:
            return
        gen = _generation(engine)
        with gen.lock:
            gen.value += 1
            with self._lock:
                store = self._stores.get(engine)
                if not store:
                    return
                if isinstance(keys, _All):
                    store.clear()
                elif callable(keys):
                    for k in [k for k, (_t, v) in store.items() if keys(k, v)]:
                        del store[k]
                else:
                    for k in keys:
                        store.pop(k, None)

    def clear_all(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.clear()
            self._refreshing.clear()


# ---------------------------------------------------------------- ORM hooks (all sessions)


def has_changes(session: Session, cache: RowCache) -> bool:
    """Whether ``session`` changed (or is about to flush) a row that ``cache`` watches."""
    if any(c is cache for c, _k in session.info.get(_PENDING_KEY, ())):
        return True
    watched = tuple(cache.watch)
    return any(isinstance(o, watched) for o in (*session.new, *session.deleted, *session.dirty))


def _changes(session: Session) -> list[tuple[RowCache, Keys]]:
    out: list[tuple[RowCache, Keys]] = []
    for obj in (*session.new, *session.dirty, *session.deleted):
        for cache in _CACHES:
            for cls, watcher in cache.watch.items():
                if isinstance(obj, cls):
                    out.append((cache, watcher(obj)))
    return out


@event.listens_for(Session, "after_begin")
def _after_begin(session: Session, _transaction: Any, connection: Any) -> None:
    engine = root_engine(connection)
    if engine is not None and _BEGIN_KEY not in session.info:
        session.info[_BEGIN_KEY] = _generation(engine).value


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _ctx: UOWTransaction) -> None:
    changes = _changes(session)
    if not changes:
        return
    engine = engine_of(session)
    pending: list[tuple[RowCache, Keys]] = session.info.setdefault(_PENDING_KEY, [])
    for cache, keys in changes:
        if not isinstance(keys, _All) and not callable(keys):
            keys = tuple(keys)
        cache.invalidate(engine, keys)
        pending.append((cache, keys))


@event.listens_for(Session, "do_orm_execute")
def _bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    cls = mapper.class_ if mapper is not None else None
    engine = engine_of(state.session)
    for cache in _CACHES:
        if cls is None or any(issubclass(cls, c) for c in cache.watch):
            cache.invalidate(engine, ALL)
            state.session.info.setdefault(_PENDING_KEY, []).append((cache, ALL))


def _settle(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    session.info.pop(_BEGIN_KEY, None)
    if pending:
        engine = engine_of(session)
        for cache, keys in pending:
            cache.invalidate(engine, keys)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    _settle(session)


@event.listens_for(Session, "after_transaction_end")
def _after_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost one (commit, rollback or close)
        _settle(session)
