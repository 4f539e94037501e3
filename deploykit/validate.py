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
# No ':' (it separates PATH entries and supervisor's values) and nothing a shell or config quotes.
_PATH = re.compile(r"^/[A-Za-z0-9._/+@=-]*$")
_SIZE = re.compile(r"^([0-9]{1,6})([kKmMgG]?)$")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
_RATE = re.compile(r"^([0-9]{1,5})r/([sm])$")
# Arguments: printable ASCII without quotes, '$' (variables), '#', '\\', braces or a second ';'.
_NGINX_DIRECTIVE = re.compile(r"^[a-z_][a-z0-9_]*( [\x20\x21\x25\x26\x28-\x3a\x3c-\x5b\x5d-\x5f\x61-\x7a\x7c\x7e]*)?;$")
# Directives that read or serve arbitrary files or run code: never through the escape hatch.
_NGINX_REFUSED = re.compile(r"^(include|load_module|root|alias|env|(perl|js|lua|njs)(_\w*)?)$")
_KERNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected {what} as text")
    # Controls, line separators and invisible format characters (zero-width, bidi overrides,
    # soft hyphen): they end lines in config files or make two different values look the same.
    if any(unicodedata.category(c) in _INVISIBLE for c in value):
        raise Invalid(f"not a valid {what}: control or invisible characters are not allowed")
    return value


_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _whole_number(value: object, message: str) -> int:
    """An int, or a string of ASCII digits (Unicode digits such as '²' or '٣' are refused)."""
    if isinstance(value, bool):
        raise Invalid(message)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    raise Invalid(message)


def _scripts(label: str) -> set[str]:
    """The Unicode scripts of a label's letters (LATIN, CYRILLIC, ...), digits and '-' aside."""
    found = set()
    for ch in label:
        if ch.isalpha():
            found.add(unicodedata.name(ch, "UNKNOWN").split(" ")[0])
    return found


# Scripts written together in one word: Japanese mixes Han and kana, Chinese and Korean pair
# Han with Bopomofo or Hangul, and each may carry Latin (the rule browsers use for IDNs).
_SCRIPT_MIXES = (
    {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HALFWIDTH", "LATIN"},
    {"CJK", "HANGUL", "LATIN"},
    {"CJK", "BOPOMOFO", "LATIN"},
)
# Cyrillic and Greek letters that look like Latin ones: a label made only of these spells a
# Latin word in another script ("аррӏе"), a whole-script look-alike.
_LATIN_LOOKALIKES = set("асԁеһіјӏорԛѕԝхуүҽьԍ" "αικνορυχ")


def _check_idn_label(label: str) -> None:
    scripts = _scripts(label)
    if len(scripts) > 1 and not any(scripts <= mix for mix in _SCRIPT_MIXES):
        raise Invalid("mixes letters from different scripts (a look-alike name); "
                      "write it in one script or in its xn-- form")
    letters = [c for c in label if c.isalpha()]
    if letters and scripts != {"LATIN"} and all(c in _LATIN_LOOKALIKES for c in letters):
        raise Invalid("spells a Latin-looking word in another script (a look-alike name); "
                      "write it in its xn-- form if it is really meant")


def _idna_encode(text: str, allowed: str) -> str:
    """IDNA 2008 with UTS #46 mapping (what browsers resolve), look-alike labels refused."""
    import idna

    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
        for label in mapped.split("."):
            if not label.isascii():
                _check_idn_label(label)
        return idna.encode(mapped).decode("ascii")
    except idna.IDNAError:
        raise Invalid(f"not a valid internationalised domain name; expected {allowed}") from None


def domain(value: object) -> str:
    """A DNS name (RFC 1123 labels, IDNA for Unicode) or an IP address, as used in TLS and nginx."""
    text = _text(value, "domain name").strip().rstrip(".")
    allowed = "letters, digits and hyphens in dot-separated labels of at most 63 characters, or an IP address"
    if not text:
        raise Invalid(f"empty; expected {allowed}")
    if "%" in text:
        # ipaddress accepts "fe80::1%<anything>": a zone id is free text, and no use in a server name.
        raise Invalid(f"IPv6 zone ids ('%...') are not allowed; expected {allowed}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if len(text) > 253:
        raise Invalid(f"longer than 253 characters; expected {allowed}")
    if not text.isascii():
        text = _idna_encode(text, allowed)
    text = text.lower()
    if len(text) > 253:
        raise Invalid(f"longer than 253 characters; expected {allowed}")
    labels = text.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise Invalid(f"not a valid domain name; expected {allowed}")
    if labels[-1].isdigit():
        raise Invalid(f"not a valid domain name (all-numeric top label); expected {allowed}")
    for label in labels:
        if label.startswith("xn--"):
            _check_a_label(label, allowed)
    return text


def _check_a_label(label: str, allowed: str) -> None:
    import idna

    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        raise Invalid(f"{label!r} is not a valid xn-- (punycode) label; expected {allowed}") from None


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
    value = _whole_number(value, "expected a port number from 1 to 65535")
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
    # A leading '-' would read as an option once the address is a command argument (certbot --email).
    if (not at or not _EMAIL_LOCAL.match(local) or local[0] in ".-" or local.endswith(".")
            or ".." in local):
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
    allowed = "an absolute path of letters, digits and . _ / + @ = -"
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
    value = _whole_number(value, "expected a whole number of seconds")
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
        raise Invalid("not a simple nginx directive; expected 'name arguments;' in printable ASCII "
                      "without braces, quotes, '$', '#', '\\' or more than one ';'")
    name = text.split(" ", 1)[0].rstrip(";")
    if _NGINX_REFUSED.match(name):
        raise Invalid(f"'{name}' reads or serves files or runs code; not allowed as an extra directive")
    return text


def kernel_name(value: object) -> str:
    text = _text(value, "kernel name")
    if not _KERNEL_NAME.match(text):
        raise Invalid("not a valid kernel name; expected lower-case letters, digits, '.', '_' and '-', "
                      "starting with a letter or digit, at most 64 characters")
    return text


def display_name(value: object) -> str:
    text = _text(value, "display name")
    if not text.strip() or len(text) > 100 or any(unicodedata.category(c) in _INVISIBLE for c in text):
        raise Invalid("expected a printable name of 1 to 100 characters")
    return text


def optional_display_name(value: object) -> str:
    if value == "":
        return ""
    return display_name(value)


def kernel_order(value: object) -> int:
    """A kernel's place in the web interface's lists: 1 to 99, or 0 for 'by display name'."""
    value = _whole_number(value, "expected a whole number from 1 to 99 (0 = sort by display name)")
    if not 0 <= value <= 99:
        raise Invalid("out of range; expected 1 to 99 (0 = sort by display name)")
    return value


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
    try:
        host = domain(host)
        if m.group(3):
            port(m.group(3)[1:])
    except Invalid as exc:
        raise Invalid(f"not a URL ({exc}); expected https://host[:port]/path") from None
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
    if isinstance(value, str) and re.match(r"^[0-9]{1,4}(\.[0-9]{1,3})?$", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("expected a number of CPUs, such as 1.5 (0 for no limit)")
    if not 0 <= value <= 1024:
        raise Invalid("out of range; expected 0 to 1024")
    return float(value)


# The distribution reference grammar: [registry[:port]/]path-component(/path-component)*[:tag][@digest].
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_IMAGE = re.compile(
    rf"^(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{{1,5}})?/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


def docker_image(value: object) -> str:
    text = _text(value, "image name")
    if len(text) > 255 or not _DOCKER_IMAGE.match(text):
        raise Invalid("not a container image reference; expected e.g. quay.io/jupyter/base-notebook:latest")
    return text


def identifier(value: object) -> str:
    text = _text(value, "name")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", text):
        raise Invalid("expected letters, digits, '.', '_' and '-', at most 64 characters")
    return text
