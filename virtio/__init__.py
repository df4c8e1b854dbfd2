"""Transport-independent VIRTIO protocol: constants, layouts, guest memory, driver-side virtqueues.

Nothing here knows about pytest or about any transport (the vhost-user protocol lives in
targets/vhost_user/).
"""
