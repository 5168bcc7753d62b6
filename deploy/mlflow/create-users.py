"""The workers' MLflow account: created (or brought back in line) with the admin's credentials.

docker-compose.yml runs this once per `docker compose up`, as the one-shot service `mlflow-users`,
before any worker starts; the tests run the same file against a real `mlflow server --app-name
basic-auth`. It is idempotent, and makes the account exactly what .env and this file say:

- the user MLFLOW_WORKER_USERNAME exists, with the password MLFLOW_WORKER_PASSWORD (reset to it
  on every run, so .env stays the source of truth) and without the admin flag;
- it holds one grant: EDIT on every experiment (`resource_type=experiment`, `resource_id=*`), which
  lets it read experiments, create runs in them, log metrics, params, tags and artifacts, and end
  runs; not delete or restore experiments or runs, manage permissions, or manage users. With
  `default_permission = READ` (deploy/mlflow/basic_auth.ini) every other user can only read.

Only the standard library: it runs in the stack's image and natively alike. Environment:
MLFLOW_TRACKING_URI, MLFLOW_ADMIN_PASSWORD, MLFLOW_WORKER_USERNAME, MLFLOW_WORKER_PASSWORD, and
MLFLOW_AUTH_CONFIG_PATH (the server's basic_auth.ini, for `admin_username`; `admin` without it).
No password is printed.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

WORKER_GRANT = {"resource_type": "experiment", "resource_id": "*", "permission": "EDIT"}
WAIT_SECONDS = 120


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        try:
            self.code = json.loads(body).get("error_code", "")
        except (ValueError, AttributeError):
            self.code = ""


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"create-users: set {name}")
    return value


def admin_username() -> str:
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if not path:
        return "admin"
    config = configparser.ConfigParser()
    if not config.read(path):
        sys.exit(f"create-users: cannot read MLFLOW_AUTH_CONFIG_PATH={path}")
    return config.get("mlflow", "admin_username", fallback="admin")


class Server:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.url}/api/{path}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None
        return json.loads(text) if text.strip() else {}

    def wait(self) -> None:
        """Until the server answers (compose also waits for its healthcheck; natively it may not)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=5).read()
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    sys.exit(f"create-users: no MLflow server at {self.url}: {error}")
                time.sleep(1)


def ensure_worker(server: Server, username: str, password: str) -> list[str]:
    """Make the worker account what the module docstring says; return what was done."""
    done = []
    try:
        user = server.call("GET", "2.0/mlflow/users/get", {"username": username})["user"]
    except ApiError as error:
        if error.code != "RESOURCE_DOES_NOT_EXIST":
            raise
        user = None
    if user is None:
        try:
            user = server.call("POST", "2.0/mlflow/users/create", {"username": username, "password": password})["user"]
            done.append("created")
        except ApiError as error:  # created meanwhile by a concurrent run: fall through to the update
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise
            user = server.call("GET", "2.0/mlflow/users/get", {"username": username})["user"]
    if "created" not in done:
        server.call("PATCH", "2.0/mlflow/users/update-password", {"username": username, "password": password})
        done.append("password set")
    if user.get("is_admin"):
        server.call("PATCH", "2.0/mlflow/users/update-admin", {"username": username, "is_admin": False})
        done.append("admin flag removed")
    grants = server.call("GET", "3.0/mlflow/users/permissions/list", {"username": username}).get("permissions", [])
    # The grant API writes to the user's own (synthetic) role, `__user_<id>__`: look at that one.
    wildcard = [
        g for g in grants
        if g["role_name"].startswith("__user_") and g["resource_type"] == "experiment" and g["resource_pattern"] == "*"
    ]
    if any(g["permission"] != WORKER_GRANT["permission"] for g in wildcard):
        revoke = {k: WORKER_GRANT[k] for k in ("resource_type", "resource_id")}
        server.call("POST", "3.0/mlflow/users/permissions/revoke", {"username": username, **revoke})
        wildcard = []
        done.append("other experiment grant revoked")
    if not wildcard:
        server.call("POST", "3.0/mlflow/users/permissions/grant", {"username": username, **WORKER_GRANT})
        done.append("EDIT on every experiment granted")
    return done


def main() -> None:
    url = required("MLFLOW_TRACKING_URI")
    admin = admin_username()
    username = required("MLFLOW_WORKER_USERNAME")
    if username == admin:
        sys.exit(f"create-users: MLFLOW_WORKER_USERNAME must not be the admin account ({admin})")
    worker_password = required("MLFLOW_WORKER_PASSWORD")
    server = Server(url, admin, required("MLFLOW_ADMIN_PASSWORD"))
    server.wait()
    try:
        done = ensure_worker(server, username, worker_password)
    except ApiError as error:
        sys.exit(f"create-users: {error}")
    print(f"create-users: MLflow user {username!r}: {', '.join(done)}")


if __name__ == "__main__":
    main()
