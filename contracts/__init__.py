"""The shared contracts: plain records every package can import without loading another.

`StagePlan` (the staging policies produce it, the simulator and the real engine follow
it), the decisions policies return (`Keep`, `Place`, `Prewarm`, `Admit`), and the
`Request` a trace yields. Each module here depends on the standard library only, so
`progressive_serve` can read a plan without importing the policy registry, and a policy
can name `Request` without loading the trace readers.
"""
