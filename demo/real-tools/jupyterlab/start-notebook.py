#!/opt/venv/bin/python
"""Starts JupyterLab like docker-stacks' start-notebook.py.

`jupyter lab`, or the subcommand in DOCKER_STACKS_JUPYTER_CMD, followed by
the words of NOTEBOOK_ARGS and then this script's own arguments, so that
`docker run IMAGE start-notebook.py --ServerApp.base_url=/x/` works as
with the upstream image.
"""

import os
import shlex
import sys

command = ["jupyter", os.environ.get("DOCKER_STACKS_JUPYTER_CMD", "lab")]
command += shlex.split(os.environ.get("NOTEBOOK_ARGS", ""))
command += sys.argv[1:]
print("Executing: " + shlex.join(command), flush=True)
os.execvp(command[0], command)
