"""`python -m validate`: see `validate.cli`."""

from validate.cli import main

raise SystemExit(main())
