"""The layout of a routing row: what a compiled router reads of one instance.

The simulator keeps one row per instance (`sim/routing_rows.py` writes them) and the default
router's compiled walk reads them (`policies/ttft_kernel.py`). Neither package may import the
other, so the layout they share lives here: the field order of a row and the code of each
instance state.
"""

# Fields of a row, in order: the instance's state code, capacity (max batch), requests given to
# it that have not started (pending its load or queued for the batch), requests in its batch,
# when its request alone (request fidelity) finishes (-inf: none), and its id (-1: a free row).
STATE, CAPACITY, WAITING, RUNNING, SOLO_FINISH, INSTANCE_ID = range(6)
WIDTH = 6

# `STATE` codes, by the state's name (`InstanceView.state`).
STATE_CODES = {"starting": 0, "loading": 1, "ready": 2, "full": 3, "sleeping": 4, "evicted": 5}
