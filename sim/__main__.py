import sys

if sys.argv[1:2] == ["sweep"]:
    from sim.sweep import main as sweep_main

    sys.exit(sweep_main(sys.argv[2:]))

from sim.cli import main

sys.exit(main())
