from snakeway.cli import main

raise SystemExit(main())
