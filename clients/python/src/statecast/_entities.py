"""Entities: descriptions held by the topics ``_entities/<key>`` (docs/entities.md), as the
clients list them and operate them. Pure: the callers bring the states."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._json import JSON

PREFIX = "_entities/"


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity: its ``key`` (its description is the state of ``_entities/<key>``), the
    ``description`` (``platform``, ``topic``, ``value``, ``command``, ...), the ``value`` at
    its pointer in its topic's state (a media player's ``state``; ``None`` while the topic is
    not held) and whether it is ``available`` (its topic held and not stale)."""

    key: str
    description: dict[str, JSON]
    value: JSON
    available: bool


def pointer_value(state: JSON, pointer: str) -> JSON:
    """The value at JSON pointer ``pointer`` in ``state``, or ``None``."""
    if pointer == "":
        return state
    value = state
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def fill_value(args: JSON, value: JSON) -> JSON:
    """``args`` with every string ``"{value}"`` replaced by ``value`` (a JSON value)."""
    if args == "{value}":
        return value
    if isinstance(args, list):
        return [fill_value(a, value) for a in args]
    if isinstance(args, dict):
        return {k: fill_value(v, value) for k, v in args.items()}
    return args


def entities(descriptions: Mapping[str, JSON], state: Callable[[str], tuple[bool, JSON, bool]]) -> list[Entity]:
    """The entities of ``descriptions`` (``{topic: description}`` of ``_entities/`` topics),
    sorted by key; ``state(topic)`` says whether the topic is held, its state and whether it
    is stale."""
    found = []
    for topic, description in descriptions.items():
        if not topic.startswith(PREFIX) or not isinstance(description, dict):
            continue
        shown = description.get("topic")
        held, current, stale = state(shown) if isinstance(shown, str) else (False, None, False)
        pointer = description.get("state" if description.get("platform") == "media_player" else "value")
        found.append(
            Entity(
                key=topic[len(PREFIX) :],
                description=description,
                value=pointer_value(current, pointer) if held and isinstance(pointer, str) else None,
                available=held and not stale,
            )
        )
    return sorted(found, key=lambda e: e.key)


def command_of(description: JSON, control: str) -> tuple[str, str, JSON] | None:
    """The ``(target, name, args)`` of a description's command field ``control``."""
    command = description.get(control) if isinstance(description, dict) else None
    if not isinstance(command, dict):
        return None
    target, name = command.get("target"), command.get("name")
    if not isinstance(target, str) or not isinstance(name, str):
        return None
    args = command.get("args")
    return target, name, args if isinstance(args, dict) else {}
