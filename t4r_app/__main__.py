import sys

from t4r_app.cli import main

sys.exit(main())
