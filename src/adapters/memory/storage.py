"""File storage in this process's memory. (Local disk and S3: ``adapters.storage``.)"""

from __future__ import annotations

from obstore.store import MemoryStore

from adapters.storage import ObjectFileStorage

__all__ = ["memory_file_storage"]


def memory_file_storage() -> ObjectFileStorage:
    """Files in this process's memory: for tests and the in-memory container."""
    store = MemoryStore()
    return ObjectFileStorage(lambda: store)
