"""Start configurable-http-proxy with its auth token read from a 0600 file.

CHP takes its token only from the CONFIGPROXY_AUTH_TOKEN environment variable. Putting it in
supervisor's `environment=` would leave it in a config file and in `supervisorctl` output, and
a flag would show it in `ps`; so supervisor runs this launcher, which reads the token file,
drops root for an unprivileged user if asked, and execs CHP with the token in its environment.

/proc/PID/environ is readable by every process running as the same user: that user must be the
proxy's own (deploykit-proxy, made by hub.ensure_proxy_account), never a shared one such as
nobody, or any other process running as it could read the token.

Usage (supervisor's command line):
    python -m deploykit.chp --token-file FILE [--user deploykit-proxy] -- CHP-ARGS...
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read_token(path: str) -> str:
    with open(path, encoding="ascii") as f:
        token = f.read().strip()
    if not token:
        raise SystemExit(f"deploykit.chp: {path} is empty")
    return token


def drop_privileges(user: str) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SystemExit(f"deploykit.chp: no user {user!r} to run the proxy as; "
                         "`deploykit provision` creates it") from None
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    token_file = user = None
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--token-file" and args:
            token_file = args.pop(0)
        elif flag == "--user" and args:
            user = args.pop(0)
        else:
            raise SystemExit(f"deploykit.chp: unexpected argument {flag!r}")
    if not args or token_file is None:
        raise SystemExit("usage: python -m deploykit.chp --token-file FILE [--user NAME] -- CHP-ARGS...")
    chp_args = args[1:]
    env = {k: v for k, v in os.environ.items() if k != "CONFIGPROXY_AUTH_TOKEN"}
    env["PATH"] = env.get("PATH") or PATH
    binary = shutil.which("configurable-http-proxy", path=env["PATH"] + ":" + PATH)
    if binary is None:
        raise SystemExit("deploykit.chp: configurable-http-proxy not found; "
                         "install it with `npm install -g configurable-http-proxy`")
    env["CONFIGPROXY_AUTH_TOKEN"] = read_token(token_file)
    # Read the token as root, then give it up: the proxy needs no privilege at all.
    if user and os.geteuid() == 0:
        drop_privileges(user)
        env["HOME"] = "/"
        env["USER"] = user
    os.execve(binary, [binary, *chp_args], env)


if __name__ == "__main__":
    main()
