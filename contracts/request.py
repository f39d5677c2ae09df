"""The one record that flows from `traces` into `sim`: a request for a model at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
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
