"""Notebook widgets (anywidget): JobTable, RunView, Timeline and CostView.

Imported lazily, so `import scripthut.widgets` costs nothing until a widget is used.
Their front end is the bundle the package build makes from `js/` (scripthut/static/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scripthut.widgets.views import CostView, JobTable, RunView, Timeline

__all__ = ["CostView", "JobTable", "RunView", "Timeline"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from scripthut.widgets import views

        return getattr(views, name)
    raise AttributeError(f"module 'scripthut.widgets' has no attribute {name!r}")
