"""`python -m ablate` is the `ablate` command."""

from ablate.cli.main import main

raise SystemExit(main())
