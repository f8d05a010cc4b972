# Server settings as in docker-stacks' base-notebook: listen on every
# interface (the container's port is published or proxied), on
# JUPYTER_PORT (default 8888), never try to open a browser. Options given
# on the command line override these.
import os

c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = int(os.getenv("JUPYTER_PORT", "8888"))
c.ServerApp.open_browser = False
c.FileContentsManager.delete_to_trash = False
