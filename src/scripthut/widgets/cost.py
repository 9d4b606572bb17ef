"""The cost model lives in `scripthut.cost`; these names stay importable from here."""

from scripthut.cost import Pricing, RunCost, TaskCost, run_cost, task_cost, task_hours

__all__ = ["Pricing", "RunCost", "TaskCost", "run_cost", "task_cost", "task_hours"]
