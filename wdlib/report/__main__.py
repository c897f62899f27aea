"""python -m wdlib.report --params P "question or topic" [--model base|sft|dapo|latest|NAME] [--out DIR]"""

from wdlib.report.run import main

raise SystemExit(main())
