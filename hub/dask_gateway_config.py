"""dask-gateway for people's own research clusters (`[dask] gateway = hub`; see `aitrade.cluster`).

The Hub runs it as one of its services (hub/jupyterhub_config.py), as root, so that each person's cluster runs as
that person's own system account (`aitrade.cluster.person_backend_class`). People authenticate with their Hub
token (the Hub hands this service JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN and JUPYTERHUB_SERVICE_NAME, so only
tokens with `access:services!service=dask-gateway` get in). It listens on 127.0.0.1:AITRADE_DASK_GATEWAY_PORT
(HTTP API and the schedulers' TLS on one port).
"""

import sys
from pathlib import Path

from aitrade.cluster import gateway_port, person_backend_class
from aitrade.config import get_settings

c = get_config()  # noqa: F821  (provided by dask-gateway-server when it loads this file)

settings = get_settings()
c.DaskGateway.address = "127.0.0.1:0"  # the private API server; the proxy below is the public side
c.Proxy.address = f"127.0.0.1:{gateway_port(settings)}"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.DaskGateway.backend_class = person_backend_class(settings)
# a person's cluster: the platform's venv (by path: the Hub's services do not inherit its PATH), bounded, and gone
# when idle
venv_bin = Path(sys.executable).parent
c.ClusterConfig.scheduler_cmd = [str(venv_bin / "dask"), "scheduler"]
c.ClusterConfig.worker_cmd = [str(venv_bin / "dask"), "worker"]
c.ClusterConfig.cluster_max_workers = 8
c.ClusterConfig.idle_timeout = 1800
