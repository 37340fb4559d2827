from resnet_port.main import main

raise SystemExit(main())
