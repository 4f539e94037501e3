"""Unit tests for deploykit/validate.py, the one validation layer (issue 8: hostile input).

No daemons: examples for each check, then properties over arbitrary values (hypothesis): every
check either returns a value or raises Invalid (never another exception: '²' is a digit to
str.isdigit and not to int()), what it returns passes the same check unchanged, and nothing it
returns can end a line, a directive or a quoted value in nginx, supervisor or Python config.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit import spec as spec_mod
from deploykit import validate as v

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- examples -------------------------------------------------------------------------------------

GOOD = [
    (v.domain, "jupyter.example.com", "jupyter.example.com"),
    (v.domain, "JUPYTER.Example.COM.", "jupyter.example.com"),
    (v.domain, "192.0.2.10", "192.0.2.10"),
    (v.domain, "::1", "::1"),
    (v.domain, "пример.test", "xn--e1afmkfd.test"),
    (v.domain, "日本語ドメイン.jp", "xn--eckwd4c7c5976acvb2w6i.jp"),
    (v.domain, "ｊｕｐｙｔｅｒ.test", "jupyter.test"),  # fullwidth maps to ASCII (UTS #46), same name
    (v.domain, "xn--e1afmkfd.test", "xn--e1afmkfd.test"),
    (v.domain, "a" * 63 + ".test", "a" * 63 + ".test"),
    (v.port, "8443", 8443),
    (v.port, 443, 443),
    (v.internal_port, 0, 0),
    (v.base_url, "/", "/"),
    (v.base_url, "/jupyter", "/jupyter/"),
    (v.base_url, "//a//b/", "/a/b/"),
    (v.base_url, "//evil.example/", "/evil.example/"),  # never protocol-relative in a redirect
    (v.username, "jupyter-admin_1", "jupyter-admin_1"),
    (v.email, "ops+jupyter@example.org", "ops+jupyter@example.org"),
    (v.abs_path, "/srv/jupyter/", "/srv/jupyter"),
    (v.optional_path, "", ""),
    (v.size, "512M", "512m"),
    (v.size, 0, "0"),
    (v.duration, "3600", 3600),
    (v.rate, "10r/m", "10r/m"),
    (v.rate, "", ""),
    (v.nginx_directive, "gzip on;", "gzip on;"),
    (v.nginx_directive, "add_header X-Robots-Tag noindex;", "add_header X-Robots-Tag noindex;"),
    (v.kernel_name, "py3.11-data", "py3.11-data"),
    (v.display_name, "Python 3 (data; {science})", "Python 3 (data; {science})"),
    (v.url, "https://acme-v02.api.letsencrypt.org/directory", "https://acme-v02.api.letsencrypt.org/directory"),
    (v.url, "http://127.0.0.1:14000/dir", "http://127.0.0.1:14000/dir"),
    (v.memory, "2G", "2G"),
    (v.cpu, "1.5", 1.5),
    (v.cpu, 2, 2.0),
    (v.docker_image, "quay.io/jupyter/base-notebook:latest", "quay.io/jupyter/base-notebook:latest"),
    (v.docker_image, "localhost:5000/team/img@sha256:" + "a" * 64, "localhost:5000/team/img@sha256:" + "a" * 64),
    (v.identifier, "jupyterhub", "jupyterhub"),
]

BAD = [
    (v.domain, "a;b.test"), (v.domain, "a{b}.test"), (v.domain, "a b.test"), (v.domain, "a\nb.test"),
    (v.domain, "a\x00b.test"), (v.domain, "$host.test"), (v.domain, "'a'.test"), (v.domain, "-a.test"),
    (v.domain, "a-.test"), (v.domain, "a" * 64 + ".test"), (v.domain, ("a" * 60 + ".") * 5 + "test"),
    (v.domain, "../etc"), (v.domain, "127.1"), (v.domain, "[::1]"), (v.domain, ""),
    (v.domain, "fe80::1%eth0"), (v.domain, "fe80::1%;}"),               # ipaddress takes any zone id
    (v.domain, "exаmple.test"),                                          # Cyrillic а in a Latin word
    (v.domain, "аррӏе.test"),                                            # all-Cyrillic "apple"
    (v.domain, "jupy\u00adter.test"), (v.domain, "jupy\u200bter.test"),  # invisible: soft hyphen, ZWSP
    (v.domain, "\u202ejupyter.test"),                                    # bidi override
    (v.domain, "☃.net"), (v.domain, "xn--zz.test"), (v.domain, 8443), (v.domain, None),
    (v.port, "0"), (v.port, "65536"), (v.port, "²"), (v.port, "٣"), (v.port, "80;"), (v.port, True),
    (v.port, -1), (v.port, 2**70), (v.port, "8" * 40), (v.port, 80.0),
    (v.base_url, "jupyter/"), (v.base_url, "/a/../b/"), (v.base_url, "/a b/"), (v.base_url, "/a;b/"),
    (v.base_url, "/$x/"), (v.base_url, "/%2e%2e/"), (v.base_url, "/" + "a" * 250 + "/"),
    (v.username, "-rf"), (v.username, "Root"), (v.username, "a" * 33), (v.username, "a b"), (v.username, "a;b"),
    (v.email, "-x@example.org"), (v.email, "a.@example.org"), (v.email, "a@localhost"), (v.email, "a@b@c.org"),
    (v.email, "a b@example.org"), (v.email, "a@example.org\n"), (v.email, "a@1.2.3.4"),
    (v.abs_path, "relative"), (v.abs_path, "/a/../b"), (v.abs_path, "/a b"), (v.abs_path, "/a;b"),
    (v.abs_path, "/a:b"), (v.abs_path, "/a$b"), (v.abs_path, "/a'b"), (v.abs_path, "/" + "a" * 1100),
    (v.size, "1t"), (v.size, "-1"), (v.size, "1g;"), (v.size, "１g"),
    (v.duration, -1), (v.duration, "1e3"), (v.duration, 10**9), (v.duration, "²"),
    (v.rate, "0r/s"), (v.rate, "10r/h"), (v.rate, "10r/m;"),
    (v.nginx_directive, "a b; c;"), (v.nginx_directive, "server { }"), (v.nginx_directive, "set $a b;"),
    (v.nginx_directive, "add_header X \"a\";"), (v.nginx_directive, "gzip on; # x"),
    (v.nginx_directive, "include /etc/shadow;"), (v.nginx_directive, "root /;"), (v.nginx_directive, "alias /;"),
    (v.nginx_directive, "load_module x.so;"), (v.nginx_directive, "js_import x;"), (v.nginx_directive, "perl_set x;"),
    (v.nginx_directive, "add_header X-A é;"), (v.nginx_directive, "gzip\ton;"),
    (v.kernel_name, "-x"), (v.kernel_name, "A"), (v.kernel_name, "a/b"), (v.kernel_name, "../x"),
    (v.display_name, ""), (v.display_name, "a\nb"), (v.display_name, "a\u2028b"), (v.display_name, "a\u202eb"),
    (v.display_name, "x" * 101),
    (v.url, "http://example.org/"), (v.url, "https://-x.org/"), (v.url, "https://x.org:99999/"),
    (v.url, "https://x.org/a b"), (v.url, "ftp://x.org/"), (v.url, "https://x.org/$x"),
    (v.memory, "2GB"), (v.memory, "0G"), (v.memory, "2g;"),
    (v.cpu, "nan"), (v.cpu, float("nan")), (v.cpu, float("inf")), (v.cpu, "1e3"), (v.cpu, -1), (v.cpu, True),
    (v.docker_image, "a/../b"), (v.docker_image, "-x"), (v.docker_image, "x:-t"), (v.docker_image, "X"),
    (v.docker_image, "a b"), (v.identifier, "-x"), (v.identifier, "a;b"),
    (v.one_of("a", "b"), "c"), (v.one_of("a", "b"), ["a"]), (v.boolean, "true"), (v.boolean, 1),
    (v.list_of(v.username), "root"), (v.list_of(v.username), ["ok", "-bad"]),
]


@pytest.mark.parametrize("check,value,expected", GOOD, ids=lambda x: getattr(x, "__name__", None))
def test_accepts_and_normalises(check, value, expected):
    assert check(value) == expected


@pytest.mark.parametrize("check,value", BAD, ids=lambda x: getattr(x, "__name__", None))
def test_refuses(check, value):
    with pytest.raises(v.Invalid):
        check(value)


def test_messages_say_what_is_allowed():
    with pytest.raises(v.Invalid, match="expected .*port number"):
        v.port("²")
    with pytest.raises(v.Invalid, match="look-alike"):
        v.domain("exаmple.test")
    with pytest.raises(v.Invalid, match="look-alike"):
        v.domain("аррӏе.test")
    with pytest.raises(v.Invalid, match="zone"):
        v.domain("fe80::1%eth0")
    with pytest.raises(v.Invalid, match="invisible"):
        v.domain("jupy\u200bter.test")
    with pytest.raises(v.Invalid, match="'include'"):
        v.nginx_directive("include /etc/nginx/x.conf;")


# -- properties -------------------------------------------------------------------------------------

def all_spec_checks() -> list[tuple[str, object]]:
    """Every check the spec uses, found from the schema: a new key is covered without editing this test."""
    out = [(f"{section}.{name}", key.check) for section, keys in spec_mod.SECTIONS.items()
           for name, key in keys.items()]
    out += [(f"kernels.{name}", key.check) for name, key in spec_mod.KERNEL_KEYS.items()]
    return out


ANY_VALUE = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="ascii"), max_size=40),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@pytest.mark.parametrize("where,check", all_spec_checks(), ids=[w for w, _ in all_spec_checks()])
@FAST
@given(value=ANY_VALUE)
def test_every_spec_check_returns_or_raises_invalid_and_is_idempotent(where, check, value):
    try:
        out = check(value)
    except v.Invalid:
        return
    assert check(out if not isinstance(out, tuple) else list(out)) == out, where


# Characters that end or escape something in nginx, supervisor or Python config, or in a shell.
BREAKING = set(";{}$'\"`\\#\n\r\x00\t") | {"\u2028", "\u2029", "\u0085"}

# What each check may return: nothing that reaches a template is escaped later, so it must be inert.
SHAPES = {
    v.domain: re.compile(r"^([a-z0-9.-]+|[0-9a-f:.]+)$"),
    v.base_url: re.compile(r"^/([A-Za-z0-9._~-]+/)*$"),
    v.username: re.compile(r"^[a-z_][a-z0-9_-]*$"),
    v.email: re.compile(r"^[A-Za-z0-9._+-]+@[a-z0-9.-]+$"),
    v.abs_path: re.compile(r"^/[A-Za-z0-9._/+@=-]*$"),
    v.size: re.compile(r"^[0-9]+[kmg]?$"),
    v.rate: re.compile(r"^([0-9]+r/[sm])?$"),
    v.kernel_name: re.compile(r"^[a-z0-9][a-z0-9._-]*$"),
    v.memory: re.compile(r"^([1-9][0-9]*[KMGT])?$"),
    v.identifier: re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
    v.url: re.compile(r"^(https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/%-]*)?)?$"),
    v.docker_image: re.compile(r"^[a-z0-9][A-Za-z0-9._/:@-]*$"),
}

HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(lambda a, h, b: a + h + b, st.sampled_from(["jupyter", "/srv/x", "a@example.org", "10r/m", "1g", ""]),
              st.sampled_from(sorted(BREAKING) + ["../", " ", "\u0430", "\u200b", "\u202e", "\u00ad", "%", ":",
                                                  "\uff0e", "\u3002", "-", "²"]),
              st.sampled_from(["", ".test", "/x", "m", "s"])),
)


@pytest.mark.parametrize("check,shape", SHAPES.items(), ids=[c.__name__ for c in SHAPES])
@FAST
@given(value=HOSTILE_TEXT)
def test_accepted_values_are_inert(check, shape, value):
    try:
        out = check(value)
    except v.Invalid:
        return
    assert shape.match(out), (value, out)
    assert not (set(out) & BREAKING), (value, out)


@FAST
@given(value=HOSTILE_TEXT)
def test_accepted_nginx_directives_are_one_simple_directive(value):
    try:
        out = v.nginx_directive(value)
    except v.Invalid:
        return
    assert out.endswith(";") and out.count(";") == 1
    assert not (set(out) & (BREAKING - {";"}))
    assert out.isascii() and out.isprintable()


@FAST
@given(label=st.text(alphabet=st.characters(whitelist_categories=["Ll", "Lu", "Lo", "Nd"]), min_size=1, max_size=20))
def test_unicode_domains_become_ldh_or_are_refused(label):
    try:
        out = v.domain(label + ".test")
    except v.Invalid:
        return
    assert re.match(r"^[a-z0-9.-]+$", out)
    assert out.endswith(".test")
