"""Suites of the virtio-net chapter (VIRTIO 1.4, 5.1)."""
