"""An app whose first import hangs (a zerg stuck booting); later imports are instant.

The first process to import it creates the file named by SLOWBOOT_MARKER and then sleeps; any
process that finds the file already there loads at once.
"""

import os
import time

_marker = os.environ["SLOWBOOT_MARKER"]
try:
    os.close(os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    pass
else:
    time.sleep(120)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
