"""Replay a trace segment on the real engine and on the simulator, and compare the two.

`segment` cuts and compresses the trace, `runner` plays it on `progressive_serve` in
wall-clock time, `simulate` runs `python -m sim` on the same requests with the measured
profile, and `compare` prints the per-policy error table.
"""
