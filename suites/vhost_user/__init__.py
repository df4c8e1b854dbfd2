"""The vhost-user back-end's own duties (QEMU docs/interop/vhost-user.rst), catalogued as vu.* clauses."""
