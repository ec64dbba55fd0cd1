"""The store's exceptions, in one place so every part (SQLite, index, lock) can raise them."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store that cannot be opened or used as asked; the message says what to do."""


class StoreVersionError(StoreError):
    """The store was written by another, incompatible version of symbolic_ram."""


class StoreDriftError(StoreError):
    """The vector index cannot serve searches (unreadable) until `verify --repair` runs."""


class StoreLockedError(StoreError):
    """Another writer held the store's write lock for longer than the lock timeout."""


class StoreReadOnlyError(StoreError):
    """A write was asked of a store opened read-only."""
