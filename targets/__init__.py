"""Transports: one package per way of reaching a device, each implementing the config ops
(targets/config_ops.py). Nothing here imports pytest.
"""
