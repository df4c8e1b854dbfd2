"""Target specs: parse ``--target`` strings and build the config-ops object each one names.

Forms: ``model:NAME[,mode=notify|threaded]`` (a reference model or a mutant),
``python:package.module:factory[,mode=...]`` (a user's device model with the same device-side API)
and ``vhost-user:DEVICE:SOCKET[,timeout=S]`` (a running vhost-user back-end, reached as its front-end).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from virtio.errors import TargetError
from virtio.net_frames import FORWARD_MODES

VALID_FORMS = """valid --target forms:
  model:blk | model:net | model:rng | model:console | model:fs   in-process reference devices
  model:blk-zoned                                         a host-managed zoned blk model (not in the default set)
  model:MUTANT                                            a deliberately broken model (python -m targets.mutants)
  python:package.module:factory                           your own device model: factory() returns a device object
  vhost-user:DEVICE:SOCKET                                a running vhost-user back-end listening on the UNIX socket
                                                          SOCKET; DEVICE is its device type (blk, net, rng, console, fs)
options, appended with commas: mode=notify (default) | mode=threaded   e.g. model:blk,mode=threaded
  vhost-user: timeout=S (seconds to wait for each answer of the back-end, default 5)  e.g. vhost-user:blk:/tmp/qsd.sock,timeout=2
              net_forward=any|unchanged|macswap (net: what the back-end does to frames it sends back, default any)"""

_SPEC_RE = re.compile(r"^(?P<kind>[a-z][a-z0-9-]*):(?P<body>[^,]+)(?P<opts>(,[a-z_]+=[A-Za-z0-9_.-]+)*)$")
_OPTIONS = {"mode": ("notify", "threaded"), "timeout": None, "net_forward": FORWARD_MODES}  # None: a positive number
_OPTIONS_BY_KIND = {"model": ("mode",), "python": ("mode",), "vhost-user": ("timeout", "net_forward")}


class TargetSpecError(ValueError):
    """A --target string that names no valid target; its message lists the valid forms."""


@dataclass(frozen=True)
class TargetSpec:
    text: str
    kind: str
    name: str
    options: dict = field(default_factory=dict, hash=False)

    @property
    def id(self) -> str:
        """Short form used in test ids (no characters pytest would mangle)."""
        opts = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{self.name}{opts}"


def model_names() -> dict[str, object]:
    from .model import MODELS
    from .mutants import mutant_registry

    names = dict(MODELS)
    names.update({n: m.factory for n, m in mutant_registry().items()})
    return names


def parse_target(text: str) -> TargetSpec:
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise TargetSpecError(f"cannot parse target {text!r}\n{VALID_FORMS}")
    kind, body = m["kind"], m["body"]
    options = {}
    for opt in filter(None, (m["opts"] or "").split(",")):
        k, v = opt.split("=", 1)
        if k not in _OPTIONS:
            raise TargetSpecError(f"unknown option {k!r} in target {text!r}\n{VALID_FORMS}")
        if k not in _OPTIONS_BY_KIND.get(kind, ()):
            raise TargetSpecError(f"option {k!r} does not apply to {kind} targets, in {text!r}\n{VALID_FORMS}")
        if _OPTIONS[k] is None:
            try:
                ok = 0 < float(v) < 3600
            except ValueError:
                ok = False
            if not ok:
                raise TargetSpecError(f"option {k}={v!r} in target {text!r}: expected a number of seconds\n{VALID_FORMS}")
        elif v not in _OPTIONS[k]:
            raise TargetSpecError(f"option {k}={v!r} in target {text!r}: expected one of {_OPTIONS[k]}\n{VALID_FORMS}")
        options[k] = v
    if kind == "model":
        known = model_names()
        if body not in known:
            raise TargetSpecError(
                f"unknown model device {body!r} in target {text!r}; models: {', '.join(sorted(k for k in known if ':' not in k))}\n{VALID_FORMS}"
            )
    elif kind == "python":
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", body):
            raise TargetSpecError(f"python target {text!r} must be python:package.module:factory\n{VALID_FORMS}")
    elif kind == "vhost-user":
        from virtio.constants import DEVICE_TYPES

        device, _, path = body.partition(":")
        if device not in DEVICE_TYPES.values() or not path:
            raise TargetSpecError(
                f"vhost-user target {text!r} must be vhost-user:DEVICE:SOCKET with DEVICE one of {', '.join(sorted(DEVICE_TYPES.values()))}\n{VALID_FORMS}"
            )
    else:
        raise TargetSpecError(f"unknown target kind {kind!r} in {text!r}\n{VALID_FORMS}")
    return TargetSpec(text.strip(), kind, body, options)


def build_device(spec: TargetSpec):
    """The device object a spec names (a model, a mutant, or the result of a user's factory)."""
    mode = spec.options.get("mode", "notify")
    if spec.kind == "model":
        return model_names()[spec.name](mode=mode)
    module_name, factory_name = spec.name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise TargetError(f"{spec.text}: cannot import {module_name!r}: {type(e).__name__}: {e}") from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise TargetError(f"{spec.text}: {module_name} has no callable {factory_name!r}")
    try:
        device = factory(mode=mode) if "mode" in spec.options else factory()
    except Exception as e:
        raise TargetError(f"{spec.text}: factory {factory_name}() raised {type(e).__name__}: {e}") from e
    return device


def open_target(spec: TargetSpec, *, timeout: float = 5.0):
    """Build the device and the transport in front of it; returns a ConfigOps object. ``timeout``:
    the run's device timeout, for the waits of an in-process transport (a vhost-user target has its
    own ``timeout=`` option: how long the back-end may take to answer a message)."""
    from .model.transport import ModelTransport

    if spec.kind == "vhost-user":
        from .vhost_user.frontend import VhostUserTransport

        device, _, path = spec.name.partition(":")
        # A back-end named on the command line is already running: a refusal will not go away.
        ops = VhostUserTransport(path, device, spec.id, timeout=float(spec.options.get("timeout", 5.0)), retry_refused=False)
        ops.net_forward = spec.options.get("net_forward", "any")
        return ops

    device = build_device(spec)
    try:
        return ModelTransport(device, spec.id, timeout=timeout)
    except TargetError:
        raise
    except Exception as e:
        raise TargetError(f"{spec.text}: cannot attach the device: {type(e).__name__}: {e}") from e


DEFAULT_TARGETS = ("model:blk", "model:net", "model:rng", "model:console", "model:fs")
