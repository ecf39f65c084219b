from delivery_server.cli import main

raise SystemExit(main())
