"""Workflows: the task JSON format, its validation, the DAG, env rules and task scripts."""
