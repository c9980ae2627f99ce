import sys

from workshop.lessons import main

sys.exit(main())
