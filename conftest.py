"""Loads the harness's pytest plugin, so `pytest` from the repository root just works."""

pytest_plugins = ["fixtures.plugin", "fixtures.devices", "fixtures.stress", "fixtures.extras"]
