"""``python -m collector`` is the same as the ``genai-collector`` console script."""

from collector.cli import main

raise SystemExit(main())
