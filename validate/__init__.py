"""Measure a machine into a simulator profile, and check the simulator against the machine.

`python -m validate` runs the real alpha-gated engine (`progressive_serve`), measures the
numbers `sim/profile.py` asks for, writes them as a profile with a Markdown report and
plots, and with `--replay` replays a trace segment on the engine and on the simulator to
report how far the simulator's prediction was. It holds no model code.
"""

from validate.errors import ValidateError

__all__ = ["ValidateError"]
