"""The engine: the one place that talks to schedulers, persists states and publishes events."""
