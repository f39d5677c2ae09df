"""The one record that flows from `traces` into `sim`: a request for a model at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, init=False)
class Request:
    """One inference request.

    `arrival_s` is seconds from the start of the trace. `model` names a deployment (the
    simulator looks its size up in the profile's model catalog, falling back to the
    profile's default model). `function` keeps the serverless function this request was
    mapped from, when it came from a function trace, so that reports can say so.
    `adapter` names a per-function adapter when functions share a base model
    (mapping mode `shared`); empty when each function is its own deployment.
    `tenant` names the client or session that sent it, where a trace says (ServeGen's
    clients, Copilot's sessions). `hash_ids` are the request's prompt prefix blocks where
    a trace gives them (Mooncake: 512 tokens each, equal ids mean a reusable KV-cache
    prefix), kept so prefix-cache reuse can be modelled; empty otherwise.
    """

    arrival_s: float
    model: str
    prompt_tokens: int
    output_tokens: int
    request_id: int = 0
    function: str = ""
    adapter: str = ""
    tenant: str = ""
    hash_ids: tuple[int, ...] = ()

    def __init__(self, arrival_s: float, model: str, prompt_tokens: int, output_tokens: int, request_id: int = 0,
                 function: str = "", adapter: str = "", tenant: str = "", hash_ids: tuple[int, ...] = ()):
        # Performance: a request is made once per simulated request, and the generated frozen
        # `__init__` (`object.__setattr__` looked up and called per field) costs 2.7 us of a
        # warm request's 20-50; the slots' own setters, bound once, do the same in 1.2.
        s = _SETTERS
        s[0](self, arrival_s)
        s[1](self, model)
        s[2](self, prompt_tokens)
        s[3](self, output_tokens)
        s[4](self, request_id)
        s[5](self, function)
        s[6](self, adapter)
        s[7](self, tenant)
        s[8](self, hash_ids)


# each field's slot setter, in field order (they bypass the frozen class's `__setattr__`)
_SETTERS = tuple(getattr(Request, name).__set__ for name in Request.__slots__)
