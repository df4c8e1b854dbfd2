"""Loads the harness's pytest plugin, so `pytest` from the repository root just works."""

pytest_plugins = ["fixtures.plugin", "fixtures.devices", "fixtures.stress", "fixtures.extras"]
pytest_plugins.append("fixtures.vhost_user")  # vhost-user protocol suite fixtures (suites/vhost_user/)
pytest_plugins.append("fixtures.interrupt")  # Ctrl-C is an interrupt wherever it lands
