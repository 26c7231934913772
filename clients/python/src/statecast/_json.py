"""JSON helpers that need no hub: RFC 7396 merge patches and MQTT-style topic patterns."""

from __future__ import annotations

from typing import Any, TypeAlias

#: A JSON value as :func:`json.loads` returns it (dict, list, str, int, float, bool, None).
#: Typed as ``Any`` so that ``change.state["temp"]`` needs no casts in applications.
JSON: TypeAlias = Any


def apply_merge_patch(target: JSON, patch: JSON) -> JSON:
    """Applies an RFC 7396 JSON merge patch to ``target`` and returns the result.

    Neither argument is modified: the objects along the patched paths are copied, the rest
    is shared with ``target``.

    >>> apply_merge_patch({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}})
    {'a': 1, 'b': {'d': 3}}
    """
    if not isinstance(patch, dict):
        return patch
    result: dict[str, JSON] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def match_topic(pattern: str, topic: str) -> bool:
    """Whether an MQTT-style ``pattern`` matches ``topic``.

    ``+`` stands for exactly one segment, a final ``#`` for zero or more remaining ones.

    >>> match_topic("micboard/+/battery", "micboard/SHURE001/battery")
    True
    >>> match_topic("micboard/#", "micboard")
    True
    """
    p = pattern.split("/")
    t = topic.split("/")
    for i, segment in enumerate(p):
        if segment == "#" and i == len(p) - 1:
            return True
        if i >= len(t):
            return False
        if segment != "+" and segment != t[i]:
            return False
    return len(p) == len(t)
