"""Hub side: jupyterhub-nativeauthenticator, made to work with JupyterHub 6.

nativeauthenticator 1.3 (the newest release) has a login handler written for JupyterHub <= 5:
it times logins with the handler's `statsd` client, which JupyterHub 6 removed, and its
`_render` returns an awaitable where JupyterHub 6's error page wants text (`sync=True`). Both
make every login a 500. This subclass swaps in a login handler without either problem; sign-up,
approval and password checks are nativeauthenticator's own, and configuration still goes to
`c.NativeAuthenticator`.

Imported by JupyterHub (the hub runs from deploykit's own environment), never by the CLI.
"""

from __future__ import annotations

from nativeauthenticator import NativeAuthenticator as _Native
from nativeauthenticator import handlers as _handlers
from tornado.escape import url_escape
from tornado.httputil import url_concat


class _NoTimer:
    """Stands in for the statsd client JupyterHub 6 no longer gives handlers."""

    def timer(self, *args, **kwargs):
        return self

    def start(self):
        return self

    def stop(self, *args, **kwargs):
        return None

    def incr(self, *args, **kwargs):
        return None


class LoginHandler(_handlers.LoginHandler):
    statsd = _NoTimer()

    def _render(self, login_error=None, username=None, sync=False, **ignored):
        # JupyterHub 6 also calls this to show an error on the login form, with sync=True and
        # the error page's own values; those are not needed by the login template.
        next_url = self.get_argument("next", default="")
        return self.render_template(
            "native-login.html",
            sync=sync,
            next=url_escape(next_url),
            username=username,
            login_error=login_error,
            custom_html=self.authenticator.custom_html,
            login_url=self.settings["login_url"],
            enable_signup=self.authenticator.enable_signup,
            two_factor_auth=self.authenticator.allow_2fa,
            authenticator_login_url=url_concat(self.authenticator.login_url(self.hub.base_url), {"next": next_url}),
        )


class NativeAuthenticator(_Native):
    def get_handlers(self, app):
        return [(route, LoginHandler if handler is _handlers.LoginHandler else handler)
                for route, handler in super().get_handlers(app)]
