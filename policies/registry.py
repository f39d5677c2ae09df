"""Find policies by name (with parameters), import path or file path.

Specs: `fixed`, `fixed[ttl=300]`, `mypkg.mod:TwoTier`, `path/to/file.py:TwoTier[gpu=60]`.
A label printed in results (`fixed[ttl=300.0]`) parses back into the same policy.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path

from policies import admission, forecast, keepalive, placement, planner, prewarm, router, staging
from policies.base import (
    AdmissionPolicy,
    KeepAlivePolicy,
    PlacementPolicy,
    Policy,
    PrewarmPolicy,
    RouterPolicy,
    StagingPolicy,
)

KINDS: dict[str, type[Policy]] = {
    "staging": StagingPolicy,
    "keepalive": KeepAlivePolicy,
    "prewarm": PrewarmPolicy,
    "placement": PlacementPolicy,
    "router": RouterPolicy,
    "admission": AdmissionPolicy,
}

_REGISTRY: dict[str, dict[str, type[Policy]]] = {kind: {} for kind in KINDS}


class PolicySpecError(ValueError):
    """A policy spec that names nothing loadable; the message lists what is valid."""


def register(kind: str, cls: type[Policy]) -> type[Policy]:
    """Register a built-in (or a user's class) under `cls.name`; duplicates are an error."""
    if kind not in KINDS:
        raise PolicySpecError(f"unknown policy kind {kind!r}; kinds: {', '.join(KINDS)}")
    if not issubclass(cls, KINDS[kind]):
        raise PolicySpecError(f"{cls.__name__} is not a {KINDS[kind].__name__}")
    if not cls.name:
        raise PolicySpecError(f"{cls.__name__} has no `name` to register under")
    if cls.name in _REGISTRY[kind] and _REGISTRY[kind][cls.name] is not cls:
        raise PolicySpecError(f"{kind} policy {cls.name!r} is already registered")
    _REGISTRY[kind][cls.name] = cls
    return cls


for _kind, _module in [
    ("staging", staging), ("staging", planner), ("keepalive", keepalive), ("prewarm", prewarm), ("prewarm", forecast),
    ("placement", placement), ("router", router), ("admission", admission),
]:
    for _obj in vars(_module).values():
        if inspect.isclass(_obj) and issubclass(_obj, KINDS[_kind]) and _obj.__module__ == _module.__name__:
            register(_kind, _obj)


def names(kind: str) -> list[str]:
    return sorted(_REGISTRY[kind])


def described(kind: str) -> list[str]:
    """Each built-in of `kind` as a spec with its parameters and defaults (`fixed[ttl=600.0]`),
    read from its constructor, for `--help`."""
    out = []
    for name in names(kind):
        params = [p for p in inspect.signature(_REGISTRY[kind][name].__init__).parameters.values()
                  if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        shown = ",".join(f"{p.name}={p.default:g}" if isinstance(p.default, float)
                         else f"{p.name}={p.default}" for p in params if p.default is not p.empty)
        out.append(f"{name}[{shown}]" if shown else name)
    return out


_SPEC = re.compile(r"^(?P<target>[^\[\]]+?)(?:\[(?P<args>.*)\])?$")


def _parse_args(text: str | None, spec: str) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise PolicySpecError(f"policy {spec!r}: parameters look like name[key=value,...], got {part!r}")
        if key.strip() in out:
            raise PolicySpecError(f"policy {spec!r}: parameter {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(cls: type, args: dict[str, str], spec: str) -> dict[str, object]:
    """Convert string parameters to the types of the constructor's defaults."""
    sig = inspect.signature(cls.__init__)
    out: dict[str, object] = {}
    for key, raw in args.items():
        if key not in sig.parameters or key == "self":
            valid = [p for p in sig.parameters if p != "self"]
            raise PolicySpecError(f"policy {spec!r}: unknown parameter {key!r}; valid: {valid or 'none'}")
        default = sig.parameters[key].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in _TRUE + _FALSE:
                    raise ValueError(raw)
                out[key] = raw.lower() in _TRUE
            elif isinstance(default, int):
                number = float(raw)
                if not number.is_integer():
                    raise ValueError(raw)
                out[key] = int(number)
            elif isinstance(default, float):
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise PolicySpecError(f"policy {spec!r}: parameter {key}={raw!r} is not a {type(default).__name__}") from None
    return out


_IMPORTLIB_DIR = str(Path(importlib.__file__).parent)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(exc: BaseException, user_file: Path | None = None) -> str:
    """`ExcType: message (at file:line)`, the line being the deepest frame in the user's
    file (or, for an import path, the deepest frame of all)."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or user_file}:{exc.lineno}" if exc.lineno else str(exc.filename or user_file)
        return f"syntax error at {where}: {_one_line(exc.msg)}"
    frames = traceback.extract_tb(exc.__traceback__)
    if user_file is not None:
        resolved = str(user_file.resolve())
        frames = [f for f in frames if f.filename in (resolved, str(user_file))]
    else:  # the import machinery's own frames say nothing about the user's code
        frames = [f for f in frames if not f.filename.startswith(("<frozen", _IMPORTLIB_DIR, __file__))]
    at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {_one_line(exc)}{at}"


def _load_file(path: Path, spec: str):
    if path.is_dir():
        raise PolicySpecError(f"policy {spec!r}: {path} is a directory, expected a .py file")
    if path.suffix != ".py":
        raise PolicySpecError(f"policy {spec!r}: {path} is not a .py file")
    mod_name = f"_user_policy_{abs(hash(str(path.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    file_spec = importlib.util.spec_from_file_location(mod_name, path)
    if file_spec is None or file_spec.loader is None:
        raise PolicySpecError(f"policy {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[mod_name] = module
    try:
        file_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's module: any failure is theirs, named
        del sys.modules[mod_name]
        raise PolicySpecError(f"policy {spec!r}: loading {path} failed: {_failure(e, path)}") from None
    return module


def _import_class(target: str, spec: str) -> type:
    module_part, _, cls_name = target.rpartition(":")
    module_part, cls_name = module_part.strip(), cls_name.strip()
    if not module_part or not cls_name:
        raise PolicySpecError(f"policy {spec!r}: expected module:Class or path/file.py:Class")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part)
        if not path.exists():
            raise PolicySpecError(f"policy {spec!r}: file {path} not found")
        module = _load_file(path, spec)
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as e:
            raise PolicySpecError(f"policy {spec!r}: cannot import {module_part!r} ({_one_line(e)})") from None
        except (Exception, SystemExit) as e:  # the user's module failed while importing
            raise PolicySpecError(f"policy {spec!r}: importing {module_part!r} failed: {_failure(e)}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise PolicySpecError(f"policy {spec!r}: {module_part} has no {cls_name!r}")
    return cls


def load_policy(kind: str, spec: str) -> Policy:
    """Build one policy of `kind` from a spec string."""
    if kind not in KINDS:
        raise PolicySpecError(f"unknown policy kind {kind!r}; kinds: {', '.join(KINDS)}")
    m = _SPEC.match(spec.strip())
    if not m:
        raise PolicySpecError(f"{kind} policy {spec!r}: expected name[key=value,...]")
    target = m.group("target").strip()
    if ":" in target:
        cls = _import_class(target, spec)
        if not (inspect.isclass(cls) and issubclass(cls, KINDS[kind])):
            raise PolicySpecError(f"{kind} policy {spec!r}: {cls!r} is not a subclass of {KINDS[kind].__name__}")
    else:
        cls = _REGISTRY[kind].get(target)
        if cls is None:
            given = f"{target!r}" if target == spec else f"{target!r} (in {spec!r})"
            raise PolicySpecError(
                f"unknown {kind} policy {given}; built-ins: {', '.join(names(kind))} "
                f"(or module:Class, or path/to/file.py:Class)"
            )
    args = _convert(cls, _parse_args(m.group("args"), spec), spec)
    try:
        return cls(**args)
    except (TypeError, ValueError) as e:
        raise PolicySpecError(f"{kind} policy {spec!r}: {_one_line(e)}") from None
    except (Exception, SystemExit) as e:  # a user's constructor: name the policy and where it failed
        raise PolicySpecError(f"{kind} policy {spec!r}: the constructor raised {_failure(e)}") from None


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs, keeping commas inside [...] together."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return [s for s in out if s]
