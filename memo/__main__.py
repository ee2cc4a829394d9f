"""``python -m memo``: the same as the ``memo`` command."""

from memo.cli import main

raise SystemExit(main())
