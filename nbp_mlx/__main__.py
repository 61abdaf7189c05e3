from nbp_mlx.cli import main

raise SystemExit(main())
