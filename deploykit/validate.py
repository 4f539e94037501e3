"""One validation layer for every value that reaches a template or a command.

Each check takes a raw value and returns the normalised value, or raises Invalid with a
sentence saying what is allowed. Callers (the CLI and the spec loader) add where the value
came from. Templates therefore only ever see values that passed through here: nothing is
escaped after the fact.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata


class Invalid(ValueError):
    """The value is not acceptable; the message says what is."""


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_URL_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
_PATH = re.compile(r"^/[A-Za-z0-9._/+@:=-]*$")
_SIZE = re.compile(r"^([0-9]{1,6})([kKmMgG]?)$")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
_RATE = re.compile(r"^([0-9]{1,5})r/([sm])$")
_NGINX_DIRECTIVE = re.compile(r"^[a-z_][a-z0-9_]*( [^;{}#\\\n\r\x00$`'\"]*)?;$")
_KERNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected {what} as text")
    if any(c in value for c in "\x00\r\n"):
        raise Invalid(f"not a valid {what}: control characters are not allowed")
    return value


def _scripts(label: str) -> set[str]:
    """The Unicode scripts of a label's letters (LATIN, CYRILLIC, ...), digits and '-' aside."""
    found = set()
    for ch in label:
        if ch.isalpha():
            found.add(unicodedata.name(ch, "UNKNOWN").split(" ")[0])
    return found


def domain(value: object) -> str:
    """A DNS name (RFC 1123 labels, IDNA for Unicode) or an IP address, as used in TLS and nginx."""
    text = _text(value, "domain name").strip().rstrip(".")
    allowed = "letters, digits and hyphens in dot-separated labels of at most 63 characters, or an IP address"
    if not text:
        raise Invalid(f"empty; expected {allowed}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text.isascii():
        # Mixed-script labels are how look-alike names are built (a Cyrillic "а" in "exаmple").
        for label in text.split("."):
            if len(_scripts(label)) > 1:
                raise Invalid("mixes letters from different scripts (a look-alike name); "
                              "write it in one script or in its xn-- form")
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise Invalid(f"not a valid internationalised domain name; expected {allowed}") from None
    text = text.lower()
    if len(text) > 253:
        raise Invalid(f"longer than 253 characters; expected {allowed}")
    labels = text.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise Invalid(f"not a valid domain name; expected {allowed}")
    if labels[-1].isdigit():
        raise Invalid(f"not a valid domain name (all-numeric top label); expected {allowed}")
    return text


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_local_name(name: str) -> bool:
    """Names no public CA will certify: localhost, *.test, *.local, *.internal, *.localhost, IPs."""
    if is_ip(name):
        return True
    return name == "localhost" or name.rsplit(".", 1)[-1] in {"test", "local", "internal", "localhost",
                                                               "example", "invalid", "lan", "home"}


def port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            raise Invalid("expected a port number from 1 to 65535")
    if not 1 <= value <= 65535:
        raise Invalid("out of range; expected a port number from 1 to 65535")
    return value


def internal_port(value: object) -> int:
    """Like port, but 0 means 'pick a free one at provision time'."""
    if value == 0:
        return 0
    return port(value)


def base_url(value: object) -> str:
    """A URL path prefix: '/' or '/a/b/', plain segments only."""
    text = _text(value, "base URL")
    allowed = "a path starting with '/' made of letters, digits and . _ ~ - (for example /jupyter/)"
    if not text.startswith("/"):
        raise Invalid(f"must start with '/'; expected {allowed}")
    segments = [s for s in text.split("/") if s]
    for seg in segments:
        if seg in {".", ".."} or not _URL_SEGMENT.match(seg):
            raise Invalid(f"not a plain path; expected {allowed}")
    if len(text) > 200:
        raise Invalid("longer than 200 characters")
    return "/" + "".join(s + "/" for s in segments)


def username(value: object) -> str:
    text = _text(value, "user name")
    if not _USER.match(text):
        raise Invalid("not a valid system user name; expected lower-case letters, digits, '_' and '-', "
                      "starting with a letter or '_', at most 32 characters")
    return text


def email(value: object) -> str:
    text = _text(value, "e-mail address")
    local, at, host = text.partition("@")
    if not at or not _EMAIL_LOCAL.match(local) or local.startswith(".") or ".." in local:
        raise Invalid("not a valid e-mail address; expected name@example.org")
    try:
        host = domain(host)
    except Invalid:
        raise Invalid("not a valid e-mail address; expected name@example.org") from None
    if is_ip(host) or "." not in host:
        raise Invalid("not a valid e-mail address; expected name@example.org")
    return f"{local}@{host}"


def abs_path(value: object) -> str:
    """An absolute filesystem path without '..', spaces, quotes or other characters that need quoting."""
    text = _text(value, "path")
    allowed = "an absolute path of letters, digits and . _ / + @ : = -"
    if not _PATH.match(text):
        raise Invalid(f"not an acceptable path; expected {allowed}")
    if any(part == ".." for part in text.split("/")):
        raise Invalid(f"contains '..'; expected {allowed}")
    if len(text) > 1024:
        raise Invalid("longer than 1024 characters")
    return text.rstrip("/") or "/"


def optional_path(value: object) -> str:
    if value == "":
        return ""
    return abs_path(value)


def size(value: object) -> str:
    """An nginx size: a number with an optional k, m or g suffix (0 means unlimited)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value, "size")
    m = _SIZE.match(text)
    if not m:
        raise Invalid("not a size; expected a number with an optional k, m or g suffix, such as 512m or 2g")
    return m.group(1) + m.group(2).lower()


def duration(value: object) -> int:
    """Seconds, as a whole number from 0 to one year."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            raise Invalid("expected a whole number of seconds")
    if not 0 <= value <= 366 * 86400:
        raise Invalid("out of range; expected 0 to 31622400 seconds")
    return value


def rate(value: object) -> str:
    """An nginx request rate such as 10r/m, or '' for none."""
    text = _text(value, "rate")
    if text == "":
        return ""
    m = _RATE.match(text)
    if not m or int(m.group(1)) == 0:
        raise Invalid("not a rate; expected requests per second or minute, such as 10r/m or 5r/s")
    return text


def nginx_directive(value: object) -> str:
    """One simple nginx directive for the escape hatch: 'name args;' with no blocks, variables or quotes."""
    text = _text(value, "nginx directive").strip()
    if not _NGINX_DIRECTIVE.match(text) or len(text) > 500:
        raise Invalid("not a simple nginx directive; expected 'name arguments;' without "
                      "braces, quotes, '$', '#' or more than one ';'")
    return text


def kernel_name(value: object) -> str:
    text = _text(value, "kernel name")
    if not _KERNEL_NAME.match(text):
        raise Invalid("not a valid kernel name; expected lower-case letters, digits, '.', '_' and '-', "
                      "starting with a letter or digit, at most 64 characters")
    return text


def display_name(value: object) -> str:
    text = _text(value, "display name")
    if not text.strip() or len(text) > 100 or any(unicodedata.category(c).startswith("C") for c in text):
        raise Invalid("expected a printable name of 1 to 100 characters")
    return text


def one_of(*choices: str):
    def check(value: object) -> str:
        if value not in choices:
            raise Invalid("expected one of: " + ", ".join(choices))
        return value  # type: ignore[return-value]

    check.choices = choices  # type: ignore[attr-defined]
    return check


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("expected true or false")
    return value


def list_of(check):
    def checked(value: object) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise Invalid("expected a list")
        out = []
        for item in value:
            try:
                out.append(check(item))
            except Invalid as exc:
                raise Invalid(f"item {item!r}: {exc}") from None
        return tuple(dict.fromkeys(out))

    return checked


def url(value: object) -> str:
    """An https (or loopback http) URL, as used for an ACME directory."""
    text = _text(value, "URL")
    if text == "":
        return ""
    m = re.match(r"^(https?)://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?$", text)
    if not m:
        raise Invalid("not a URL; expected https://host[:port]/path")
    host = m.group(2).strip("[]")
    if m.group(1) == "http" and not (host == "localhost" or (is_ip(host) and ipaddress.ip_address(host).is_loopback)):
        raise Invalid("plain http is allowed only for loopback; expected https://")
    return text


def memory(value: object) -> str:
    """A memory limit like 2G or 512M, or '' for none."""
    text = _text(value, "memory limit")
    if text == "":
        return ""
    if not re.match(r"^[1-9][0-9]{0,5}[KMGT]$", text):
        raise Invalid("expected a number with K, M, G or T, such as 2G")
    return text


def cpu(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("expected a number of CPUs, such as 1.5 (0 for no limit)")
    if not 0 <= value <= 1024:
        raise Invalid("out of range; expected 0 to 1024")
    return float(value)


def docker_image(value: object) -> str:
    text = _text(value, "image name")
    if not re.match(r"^[a-z0-9][a-z0-9._/-]{0,200}(:[A-Za-z0-9._-]{1,128})?(@sha256:[a-f0-9]{64})?$", text):
        raise Invalid("not a container image reference; expected e.g. quay.io/jupyter/base-notebook:latest")
    return text


def identifier(value: object) -> str:
    text = _text(value, "name")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", text):
        raise Invalid("expected letters, digits, '.', '_' and '-', at most 64 characters")
    return text
