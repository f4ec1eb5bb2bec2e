from cmrprior.cli import main

raise SystemExit(main())
