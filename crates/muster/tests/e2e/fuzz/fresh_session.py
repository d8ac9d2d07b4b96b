"""Schemathesis hooks for tests/fuzz_openapi.rs: a new session for every test case.

The operations fuzzed with these hooks can end the caller's session or lock them out (log
out, revoke sessions, lock, reject, set their password, update them). Every case therefore
logs in anew, and after any case that was answered 2xx (whatever it changed) the next case
runs as a new user, made with the `muster user` command line against the server's database.
A refused request changes nothing, so the user stays usable after one.

Settings come from the environment (set by the Rust test):
  MUSTER_FUZZ_BASE          the server's base URL
  MUSTER_FUZZ_BIN           the muster binary
  MUSTER_FUZZ_DATABASE_URL  the server's database
  MUSTER_FUZZ_DATA_DIR      the server's data directory (its key)
  MUSTER_FUZZ_ROLE          `super` (super-users) or `regular`
"""

import itertools
import os
import subprocess

import requests
import schemathesis

PASSWORD = "Fresh-fuzz-s3ssion!"
_serial = itertools.count(1)


def _new_user() -> str:
    role = os.environ["MUSTER_FUZZ_ROLE"]
    command = {"super": "create-super-user", "regular": "create"}[role]
    username = f"fuzz-{role}-{os.getpid()}-{next(_serial)}"
    subprocess.run(
        [os.environ["MUSTER_FUZZ_BIN"], "user", command, username, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ.get("PATH", ""),
            "MUSTER_DATABASE_URL": os.environ["MUSTER_FUZZ_DATABASE_URL"],
            "MUSTER_DATA_DIR": os.environ["MUSTER_FUZZ_DATA_DIR"],
            "MUSTER_LOG": "warn",
        },
    )
    return username


# The user the next case runs as; None: make a new one.
_user: dict[str, str | None] = {"username": None}


def _login(username: str) -> str:
    response = requests.post(
        f"{os.environ['MUSTER_FUZZ_BASE']}/api/session",
        json={"username": username, "password": PASSWORD},
        timeout=30,
    )
    if response.status_code != 201:
        raise RuntimeError(f"{username} could not log in: {response.status_code} {response.text}")
    return response.json()["token"]


# refresh_interval=None: no caching, `get` runs for every test case.
@schemathesis.auth(refresh_interval=None)
class FreshSession:
    def get(self, case, context):
        if _user["username"] is None:
            _user["username"] = _new_user()
        return _login(_user["username"])

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def after_call(context, case, response):
    if 200 <= response.status_code < 300:
        _user["username"] = None
