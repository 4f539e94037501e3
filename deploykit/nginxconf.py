"""Read an nginx configuration as nginx would: the directive tree with includes expanded, and what
is in effect for one request (server by port and name, location by URI, inherited directives).

Only looks: `deploykit doctor` uses it to tell what the configuration on disk does to a WebSocket
request, which no request from outside can show (Jupyter answers an unauthenticated handshake
with 403 whether or not nginx passed the Upgrade header on).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from pathlib import Path


class ConfigError(ValueError):
    """The file cannot be read or tokenised."""


@dataclasses.dataclass
class Directive:
    name: str
    args: list[str]
    block: list["Directive"] | None = None
    file: str = ""

    def children(self, name: str) -> list["Directive"]:
        return [d for d in self.block or () if d.name == name]


def _tokens(text: str, source: str):
    """Words (quotes removed), ';', '{' and '}', with comments dropped."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            yield c, False
            i += 1
        elif c in "\"'":
            j, out = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(text[j])
                j += 1
            if j >= n:
                raise ConfigError(f"{source}: unterminated quote")
            yield "".join(out), True
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                if text.startswith("${", j):  # ${name} is part of the word, not a block
                    k = text.find("}", j)
                    j = n if k < 0 else k + 1
                    continue
                j += 1
            yield text[i:j], False
            i = j


def parse(text: str, source: str = "nginx.conf") -> list[Directive]:
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for tok, quoted in _tokens(text, source):
        if quoted or tok not in ";{}":
            words.append(tok)
        elif tok == ";":
            if words:
                stack[-1].append(Directive(words[0], words[1:], None, source))
            words = []
        elif tok == "{":
            if not words:
                raise ConfigError(f"{source}: block without a name")
            d = Directive(words[0], words[1:], [], source)
            stack[-1].append(d)
            stack.append(d.block)
            words = []
        else:
            if len(stack) == 1:
                raise ConfigError(f"{source}: unexpected '}}'")
            stack.pop()
    if len(stack) != 1:
        raise ConfigError(f"{source}: unclosed block")
    return stack[0]


def read_config(main_conf: Path, prefix: Path | None = None, _depth: int = 0) -> list[Directive]:
    """The tree of main_conf with every include replaced by the directives of the files it names."""
    main_conf = Path(main_conf)
    try:
        text = main_conf.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {main_conf}: {exc}") from None
    return _expand(parse(text, str(main_conf)), Path(prefix or main_conf.parent), _depth)


def _expand(directives: list[Directive], prefix: Path, depth: int) -> list[Directive]:
    if depth > 10:
        raise ConfigError("includes nested more than 10 deep")
    out = []
    for d in directives:
        if d.name == "include" and d.block is None and d.args:
            pattern = d.args[0] if os.path.isabs(d.args[0]) else str(prefix / d.args[0])
            for path in sorted(glob.glob(pattern)):
                text = Path(path).read_text()
                out += _expand(parse(text, path), prefix, depth + 1)
            continue
        if d.block is not None:
            d = dataclasses.replace(d, block=_expand(d.block, prefix, depth))
        out.append(d)
    return out


# -- what applies to one request -----------------------------------------------------------------

def _listen_port(args: list[str]) -> int | None:
    addr = args[0] if args else ""
    m = re.search(r"(?:^|:)(\d+)$", addr)
    return int(m.group(1)) if m else (80 if addr and not addr.isdigit() else None)


def find_server(tree: list[Directive], port: int, name: str) -> Directive | None:
    """The server block nginx picks for a request to port with Host name (exact name, else the default)."""
    candidates = []
    for http in (d for d in tree if d.name == "http"):
        for server in http.children("server"):
            if any(_listen_port(listen.args) == port for listen in server.children("listen")):
                candidates.append(server)
    for server in candidates:
        names = [a for d in server.children("server_name") for a in d.args]
        if name in names:
            return server
    for server in candidates:
        if any("default_server" in listen.args for listen in server.children("listen")):
            return server
    return candidates[0] if candidates else None


def find_location(server: Directive, uri: str) -> Directive | None:
    """nginx's choice: an exact match, else the longest prefix unless a regex matches first (not after ^~)."""
    locations = server.children("location")
    best, best_len, best_stops = None, -1, False
    for loc in locations:
        if len(loc.args) == 2 and loc.args[0] == "=" and loc.args[1] == uri:
            return loc
        if len(loc.args) == 1 and uri.startswith(loc.args[0]) and len(loc.args[0]) > best_len:
            best, best_len, best_stops = loc, len(loc.args[0]), False
        elif len(loc.args) == 2 and loc.args[0] == "^~" and uri.startswith(loc.args[1]) and len(loc.args[1]) > best_len:
            best, best_len, best_stops = loc, len(loc.args[1]), True
    if not best_stops:
        for loc in locations:
            if len(loc.args) == 2 and loc.args[0] in ("~", "~*"):
                flags = re.IGNORECASE if loc.args[0] == "~*" else 0
                try:
                    if re.search(loc.args[1], uri, flags):
                        return loc
                except re.error:
                    continue
    return best


def effective(levels: list[Directive], name: str) -> list[Directive]:
    """The directives called name that apply in the innermost level: nginx inherits a directive
    (and an array directive such as proxy_set_header, as a whole) only from the nearest level that has it."""
    for level in reversed(levels):
        found = level.children(name)
        if found:
            return found
    return []


def maps(http: Directive) -> dict[str, str]:
    """map blocks: variable made -> variable it is made from."""
    return {d.args[1]: d.args[0] for d in http.children("map") if len(d.args) == 2}
