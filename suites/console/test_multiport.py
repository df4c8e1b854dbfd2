"""VIRTIO 1.4, 5.3.6.2: the multiport console's control protocol, and data on every port's queues.

The harness drives the protocol as Linux's virtio_console does (suites/console/multiport.py):
DEVICE_READY, PORT_READY for each port the device adds, PORT_OPEN 1 for each console port. Every
control message the device sends is checked against 5.3.6.2.1: a DEVICE_ADD names a new port below
max_nr_ports, a DEVICE_REMOVE a port that exists. Ports are hot-plugged by a configuration change
(a device event out of band: ``trigger_config_change``), where the target has a way to cause one.
"""

from __future__ import annotations

import os

import pytest

from virtio import console as VC

from .multiport import CLAUSE_ADD, CLAUSE_REMOVE, MultiportConsole

pytestmark = [pytest.mark.usefixtures("target_spec"), pytest.mark.device_types("console")]

CLAUSE_USED = "def.basic.buffers-are-used"
HOTPLUG_ROUNDS = 2  # configuration changes asked for: one may plug a port in, the next out


@pytest.mark.clause(CLAUSE_ADD)
def test_device_add_names_new_ports_below_max_nr_ports(session, ring_layout):
    """After DEVICE_READY the device announces its ports; each DEVICE_ADD names a port that does
    not exist yet, below max_nr_ports. After a device reset no port exists (2.4), so the device
    announces them again: that is no second DEVICE_ADD of an existing port."""
    con = MultiportConsole(session)
    con.start()
    session.driver.reset()
    again = MultiportConsole(session)
    again.start()


@pytest.mark.clause(CLAUSE_REMOVE)
def test_device_remove_names_existing_ports(session):
    """Ports hot-plugged in and out by configuration changes: each DEVICE_REMOVE names a port an
    earlier DEVICE_ADD created and no removal took away since; each DEVICE_ADD is checked too."""
    con = MultiportConsole(session)
    con.start()
    for _ in range(HOTPLUG_ROUNDS):
        session.driver.ops.trigger_config_change()
        con.settle()
        con.ready_ports()
    if not con.table.events(VC.VIRTIO_CONSOLE_DEVICE_REMOVE):
        pytest.skip(f"the device removed no port (no DEVICE_REMOVE) on {HOTPLUG_ROUNDS} configuration changes: "
                    "no removal to judge")


@pytest.mark.clause(CLAUSE_USED)
def test_every_port_transmitq_is_used(session):
    """Data written to each port the device created (transmitq(portN)) is taken: every transmit
    buffer comes back used (2.6), on port 0 and on the multiport queues alike. Where the output
    goes (a log, a socket, back to the port's input) is the device's business and not judged."""
    con = MultiportConsole(session)
    con.start()
    ports = con.usable_ports()
    if not ports:
        pytest.skip(f"the device created no port among the {con.nports} the harness set up queues for")
    for port in ports:
        tx = con.vqs[VC.port_transmitq(port)]
        data = f"port {port}: ".encode() + os.urandom(16).hex().encode()
        c = tx.add([data], [], f"port {port} output")
        tx.kick()
        tx.wait_chain(c, con.timeout, awaited=f"{tx.name} buffer of {len(data)} bytes ({con.table.describe(port)})")
        tx.release(c)
