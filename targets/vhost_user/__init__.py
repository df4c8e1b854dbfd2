"""The vhost-user transport (QEMU docs/interop/vhost-user.rst): the harness as front-end, any
vhost-user back-end as the device under test."""

from .frontend import VhostUserTransport

__all__ = ["VhostUserTransport"]
