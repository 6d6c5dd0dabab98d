"""Suite-wide collection order: the long files first.

``make test`` runs pytest-xdist with ``--dist loadfile`` (each file on one worker, so that a file's
module-level caches are computed once), handing files to the workers in collection order. A long
file collected last would run alone at the end while the other worker idles, so files holding a
``slow`` test and the notebook runs (``tests/notebooks/test_run_*.py``) are moved to the front,
keeping the order within each group.
"""


def _long(item) -> bool:
    return item.get_closest_marker("slow") is not None or (
        item.path.parent.name == "notebooks" and item.path.name.startswith("test_run_"))


def pytest_collection_modifyitems(session, config, items):
    long_files = {item.path for item in items if _long(item)}
    items.sort(key=lambda item: item.path not in long_files)  # stable: the order within each group stays
