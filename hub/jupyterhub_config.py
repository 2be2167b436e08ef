"""JupyterHub configuration for aitrade (JupyterHub 6).

Start it through the platform (`make run` / `aitrade hub`), or by hand from the project root:

    AITRADE_SETTINGS=settings.ini jupyterhub -f hub/jupyterhub_config.py

Everything that is logic (roles, scopes, audited authenticators, the first admin) lives in `aitrade.hub`
(nbs/80_hub.ipynb); this file only wires it in from the `[hub]` settings. Production spawners
(KubeSpawner, DockerSpawner) are documented in hub/README.md.
"""

import os
import sys
from pathlib import Path

from aitrade import cluster, hub
from aitrade.auth import ROLES
from aitrade.config import get_settings

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

settings = get_settings()
cfg = settings.hub
state = hub.hub_dir(settings)
state.mkdir(parents=True, exist_ok=True)
repo = Path(__file__).resolve().parents[1]
venv_bin = Path(sys.executable).parent

# --- the Hub itself --------------------------------------------------------------------------------------
c.JupyterHub.ip = cfg.ip
c.JupyterHub.port = cfg.port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("AITRADE_HUB_INTERNAL_PORT", cfg.port + 81))
c.JupyterHub.db_url = hub.hub_db_url(settings)
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.tornado_settings = {"log_function": hub.audit_request}
c.JupyterHub.cleanup_servers = True
# the landing page: the Hub's home lists what each person may open, by their scopes (hub/templates/home.html);
# people without a server land there after login, people with one in JupyterLab
c.JupyterHub.template_paths = [str(repo / "hub" / "templates")]
c.JupyterHub.template_vars = {"aitrade": hub.landing_vars}
c.JupyterHub.default_url = hub.landing_url
c.ConfigurableHTTPProxy.command = [str(repo / "hub" / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{int(os.environ.get('AITRADE_HUB_PROXY_API_PORT', cfg.port + 1))}"
)
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

# --- roles and scopes: one custom scope per aitrade right, roles granted to groups ------------------------
c.JupyterHub.custom_scopes = hub.custom_scopes()
c.JupyterHub.load_roles = hub.hub_roles()
if cfg.authenticator == "native":
    # with SSO the identity provider owns group membership (manage_groups); JupyterHub then refuses load_groups,
    # and the roles above create the groups they are granted to
    c.JupyterHub.load_groups = {
        name: {"users": [cfg.admin_user] if name == "admin" else []} for name in ROLES
    }
c.Authenticator.admin_users = {cfg.admin_user}

# --- authentication --------------------------------------------------------------------------------------
if cfg.authenticator == "native":
    c.JupyterHub.authenticator_class = hub.native_authenticator_class()
    c.NativeAuthenticator.enable_signup = True
    c.NativeAuthenticator.open_signup = False  # an admin approves every sign-up
    c.NativeAuthenticator.minimum_password_length = cfg.min_password_length
    c.NativeAuthenticator.check_common_password = True
    c.NativeAuthenticator.allowed_failed_logins = cfg.lockout_attempts
    c.NativeAuthenticator.seconds_before_next_try = cfg.lockout_seconds
    # NativeAuthenticator only authenticates sign-ups an admin approved, so every authenticated user is allowed
    c.Authenticator.allow_all = True
else:
    ep = hub.oidc_endpoints(cfg.oidc_issuer)
    c.JupyterHub.authenticator_class = hub.oidc_authenticator_class()
    c.GenericOAuthenticator.client_id = cfg.oidc_client_id
    c.GenericOAuthenticator.client_secret = cfg.oidc_client_secret.get_secret_value()
    c.GenericOAuthenticator.oauth_callback_url = f"http://{cfg.ip}:{cfg.port}/hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = ep["authorize_url"]
    c.GenericOAuthenticator.token_url = ep["token_url"]
    c.GenericOAuthenticator.userdata_url = ep["userdata_url"]
    c.GenericOAuthenticator.logout_redirect_url = ep["logout_url"]
    c.GenericOAuthenticator.scope = ["openid", "profile", "email", cfg.oidc_groups_claim]
    c.GenericOAuthenticator.username_claim = "preferred_username"
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = f"oauth_user.{cfg.oidc_groups_claim}"
    c.GenericOAuthenticator.allowed_groups = set(ROLES)  # members of an aitrade group may log in
    c.Authenticator.allow_all = False
    c.GenericOAuthenticator.admin_groups = {"admin"}  # members of the IdP's `admin` group are Hub admins
    # ... which is also the only way to grant them JupyterHub's `admin` role here: on a first start JupyterHub 6
    # cannot create a missing group for that role (it sets `.admin` on None), and load_groups is refused above
    for role in c.JupyterHub.load_roles:
        if role["name"] == "admin":
            role.pop("groups", None)
    c.GenericOAuthenticator.enable_auth_state = False

# --- spawner: each person's JupyterLab as their own system account (aitrade.accounts), never root -------
# With [accounts] service_account set (the default) the Hub, started by root, runs people's servers as
# jupyter-<name> (made on first spawn) and its services as the service account; started by anyone else it starts
# no servers and says why. Single-account mode (service_account empty) runs everything as the starting account.
service_account = settings.accounts.service_account
if service_account:
    c.JupyterHub.spawner_class = hub.person_spawner_class(settings)
else:
    c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    c.SimpleLocalProcessSpawner.home_dir_template = str(state / "users" / "{username}")
    if os.geteuid() == 0:  # single-account mode as root (the test suite's throwaway hubs)
        c.Spawner.args = ["--allow-root"]
services_as = {"user": service_account} if service_account and os.geteuid() == 0 else {}
c.Spawner.default_url = "/lab"
c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
# people's servers get the platform's API (below) and their own compute, never the production cluster's address
c.Spawner.environment = {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin"}
if gateway := cluster.gateway_url(settings):  # people's own clusters from dask-gateway ([dask] gateway)
    c.Spawner.environment["AITRADE_DASK__GATEWAY"] = gateway
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60

# --- services: idle culler, the trading API (aitrade.api at /services/aitrade-api) -------------------------
# The API listens on 127.0.0.1:AITRADE_API_PORT (default: Hub port + 2); the Hub passes it that URL as
# JUPYTERHUB_SERVICE_URL, its token and OAuth client, and the platform's AITRADE_* settings. Browser logins get
# OAuth tokens that may carry the aitrade scopes (never more than the user holds) and read:metrics.
api_port = hub.service_port(hub.API_SERVICE, settings)
api_url = f"http://127.0.0.1:{api_port}/services/{hub.API_SERVICE}"  # inside the machine: no proxy hop
# people's servers reach the API as their owner (aitrade.client.Client): the address, and a server token that
# carries the owner's aitrade scopes (the Hub grants only those the owner holds)
c.Spawner.environment["AITRADE_API_URL"] = api_url
c.Spawner.server_token_scopes = hub.server_token_scopes()
# the platform's settings for the services, but not the identity provider's secret: they have no use for it
service_env = {
    k: v
    for k, v in os.environ.items()
    if (k.startswith("AITRADE_") and "OIDC_CLIENT_SECRET" not in k) or k == "NUMBA_CACHE_DIR"
}
# every process of the platform carries its id, people's servers and the culler too: `aitrade up` stops them all
# by it (aitrade.platform.sweep), even those a Hub killed before its cleanup left behind
platform_tag = {k: v for k, v in service_env.items() if k == "AITRADE_PLATFORM_ID"}
c.Spawner.environment.update(platform_tag)
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600"],
        "environment": platform_tag,
        **services_as,
    },
    {
        "name": hub.API_SERVICE,
        "url": f"http://127.0.0.1:{api_port}",
        "command": [sys.executable, "-c", "from aitrade.api import main; main()"],
        "cwd": str(settings.root),
        "environment": service_env,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": sorted(hub.custom_scopes()) + ["read:metrics"],
        "display": True,
        **services_as,
    },
]
# Voila for managers (aitrade.voila) at /services/aitrade-voila, for people without a server: the notebooks of
# dashboards/, rendered read-only in pre-heated kernels, after the Hub's OAuth (access:services!service=aitrade-voila)
voila_port = hub.service_port(hub.VOILA_SERVICE, settings)
c.JupyterHub.services.append(
    {
        "name": hub.VOILA_SERVICE,
        "url": f"http://127.0.0.1:{voila_port}",
        "command": [
            sys.executable,
            "-c",
            f"from aitrade.voila import main; main({str(repo / 'dashboards')!r})",
        ],
        "cwd": str(settings.root),
        "environment": service_env,
        "oauth_no_confirm": True,
        "display": True,
        **services_as,
    }
)
# the desk's live pages (aitrade.dashboards, Panel) at /services/aitrade-dashboards, for roles that may view
# dashboards: the Hub's OAuth (with PKCE), tokens that carry the viewer's aitrade scopes for the API calls it makes
dashboards_port = hub.service_port(hub.DASHBOARDS_SERVICE, settings)
c.JupyterHub.services.append(
    {
        "name": hub.DASHBOARDS_SERVICE,
        "url": f"http://127.0.0.1:{dashboards_port}",
        "command": [sys.executable, "-c", "from aitrade.cli import main; main()", "dashboards", "serve"],
        "cwd": str(settings.root),
        "environment": service_env | {"AITRADE_API_URL": api_url},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": sorted(hub.custom_scopes()),
        "display": True,
        **services_as,
    }
)
# dask-gateway run by the Hub ([dask] gateway = hub): as root, so each person's cluster runs as their own account;
# only the roles with a server may reach it (the gateway checks access:services!service=dask-gateway). An external
# gateway (an http(s) URL) is the operator's to register as a service (hub/README.md)
if settings.dask.gateway == "hub":
    gateway_access = f"access:services!service={cluster.GATEWAY_SERVICE}"
    for role in c.JupyterHub.load_roles:
        if "servers!user" in role.get("scopes", []):
            role["scopes"].append(gateway_access)
    c.Spawner.server_token_scopes = [*c.Spawner.server_token_scopes, gateway_access]
    c.JupyterHub.services.append(
        {
            "name": cluster.GATEWAY_SERVICE,
            "command": [
                sys.executable,
                "-m",
                "dask_gateway_server",
                "-f",
                str(repo / "hub" / "dask_gateway_config.py"),
            ],
            "cwd": str(settings.root),
            "environment": service_env | {"AITRADE_DASK_GATEWAY_PORT": str(cluster.gateway_port(settings))},
        }
    )
# Prometheus scrapes the Hub's /hub/metrics and the services' /metrics with a token whose only scope is read:metrics
# (var/metrics/prometheus-token; aitrade.monitoring writes the scrape configuration that names it)
prometheus_service, prometheus_role = hub.prometheus_service(settings)
c.JupyterHub.services.append(prometheus_service)
c.JupyterHub.load_roles.append(prometheus_role)
c.JupyterHub.load_roles.append(
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
)
