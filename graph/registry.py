"""The registry: class_type -> node class, filled explicitly from a list of node modules."""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from types import ModuleType

from .node import Node
from .spec import NodeDefinitionError, NodeSpec, compile_spec


class Registry:
    """Node classes by class_type. Registration checks each declaration (NodeDefinitionError)."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Node]] = {}

    def register(self, cls: type[Node]) -> type[Node]:
        spec = compile_spec(cls)
        if spec.class_type in self._classes and self._classes[spec.class_type] is not cls:
            other = self._classes[spec.class_type]
            raise NodeDefinitionError(
                f"duplicate class_type {spec.class_type!r}: {other.__module__}.{other.__name__} and "
                f"{cls.__module__}.{cls.__name__}")
        if not cls.HEADLESS_ONLY and not spec.class_type.startswith("GenArt"):
            raise NodeDefinitionError(f"{cls.__name__}: class_type must start with 'GenArt', got {spec.class_type!r}")
        cls.spec = spec
        self._classes[spec.class_type] = cls
        return cls

    def register_modules(self, modules: Iterable[ModuleType]) -> None:
        """Register every Node subclass a module defines that sets its own CLASS_TYPE.

        Shared bases (no CLASS_TYPE of their own) are skipped; order is definition order.
        """
        for module in modules:
            for obj in list(vars(module).values()):
                if (inspect.isclass(obj) and issubclass(obj, Node) and obj.__module__ == module.__name__
                        and "CLASS_TYPE" in obj.__dict__):
                    self.register(obj)

    def get(self, class_type: str) -> type[Node] | None:
        return self._classes.get(class_type)

    def spec(self, class_type: str) -> NodeSpec | None:
        cls = self._classes.get(class_type)
        return cls.spec if cls is not None else None

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def items(self) -> Iterator[tuple[str, type[Node]]]:
        return iter(self._classes.items())
