from sup.cli import main

raise SystemExit(main())
