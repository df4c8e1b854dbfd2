"""Loads the harness's pytest plugin (fixtures/harness.py), so `pytest` from the repository root just works."""

pytest_plugins = ["fixtures.harness"]
