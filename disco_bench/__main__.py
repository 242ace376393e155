from disco_bench.cli import main

raise SystemExit(main())
