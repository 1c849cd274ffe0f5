"""Reading bench/results/*.json, shared by report.py and repeat.py."""


def g(obj, *path):
    """obj[path[0]][path[1]]…, or None where any step is missing (a peer that failed a phase)."""
    for p in path:
        if obj is None:
            return None
        try:
            obj = obj[p]
        except (KeyError, IndexError, TypeError):
            return None
    return obj
