import sys

from aimlutils.hyper_opt.worker.main import main

sys.exit(main())
