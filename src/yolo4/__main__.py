from yolo4.cli import main

raise SystemExit(main())
