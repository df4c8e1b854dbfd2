"""The vhost-user transport (QEMU docs/interop/vhost-user.rst): the harness as front-end, any
vhost-user back-end as the device under test.

One module per concept, shared by the front-end, the raw session and the back-end:
protocol.py (message codes, flags, payload layouts, Message, errors), channel.py (the bounded
socket channel), handover.py (guest memory and rings handed to a back-end: USER_BASE, memory
table, ring programming), inflight.py (the shared inflight buffer), events.py (the front-end's
event thread); frontend.py (the transport: config ops as vhost-user messages), session.py (the
raw session the protocol suite drives), backend.py / backend_memory.py / serve.py (our models
served as a vhost-user back-end).
"""

from .frontend import VhostUserTransport

__all__ = ["VhostUserTransport"]
