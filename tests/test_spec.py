"""The spec: defaults, merging, validation naming the key, and a TOML round trip. Pure."""

from __future__ import annotations

import pytest

from deploykit.errors import BadInput
from deploykit.spec import build_spec, dump_spec, merge, parse_spec


def base(**over):
    raw = {"deployment": {"domain": "jupyter.test"}}
    return merge(raw, over)


def test_defaults_for_the_local_target():
    spec = build_spec(base())
    assert spec.deployment.mode == "notebook"
    assert (spec.http.http_port, spec.http.https_port) == (8080, 8443)
    assert spec.http.base_url == "/"
    assert spec.tls.mode == "self-signed"


def test_system_target_defaults_to_standard_ports():
    spec = build_spec(base(deployment={"target": "system"}))
    assert (spec.http.http_port, spec.http.https_port) == (80, 443)


def test_merge_does_not_mutate_and_overrides_key_by_key():
    a = {"http": {"base_url": "/a/", "upload_limit": "2g"}}
    b = {"http": {"base_url": "/b/"}}
    merged = merge(a, b)
    assert merged == {"http": {"base_url": "/b/", "upload_limit": "2g"}}
    assert a == {"http": {"base_url": "/a/", "upload_limit": "2g"}}


def test_round_trip_through_toml():
    spec = build_spec(base(hub={"admins": ["alice"]}, http={"base_url": "/jhub"},
                           kernels=[{"name": "py-a", "python": "/opt/a/bin/python", "display_name": "A ✓"}]))
    again = parse_spec(dump_spec(spec))
    assert again == spec
    assert again.http.base_url == "/jhub/"
    assert again.kernels[0].display_name == "A ✓"


@pytest.mark.parametrize("raw,where", [
    ({"deployment": {"domain": "jupyter.test"}, "htpp": {}}, "[htpp]"),
    ({"deployment": {"domain": "jupyter.test"}, "http": {"base_ulr": "/"}}, "http.base_ulr"),
    ({"deployment": {"domain": "jupyter.test"}, "http": {"https_port": "443x"}}, "http.https_port"),
    ({"deployment": {"domain": "jupyter.test"}, "hub": {"idle_timeout": -1}}, "hub.idle_timeout"),
    ({"deployment": {"domain": "jupyter.test"}, "hub": {"admins": ["Bad User"]}}, "hub.admins"),
    ({"deployment": {"domain": "jupyter.test"}, "tls": {"mode": "letsencrypt"}}, "tls.email"),
    ({"deployment": {"domain": "jupyter.example.com"}, "tls": {"mode": "off"}}, "tls.mode"),
    ({"deployment": {"domain": "jupyter.test"}, "http": {"http_port": 9000, "https_port": 9000}}, "http.https_port"),
    ({"deployment": {}}, "deployment.domain"),
])
def test_invalid_values_name_the_key(raw, where):
    with pytest.raises(BadInput) as exc:
        build_spec(raw)
    assert where in str(exc.value)
    assert exc.value.exit_code == 2


def test_unparseable_toml_is_bad_input():
    with pytest.raises(BadInput):
        parse_spec("[deployment\ndomain=")
