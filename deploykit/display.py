"""All user-facing progress goes through here: one line per step, with its outcome and time."""

from __future__ import annotations

import contextlib
import sys
import time

import click


class Reporter:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream

    def line(self, text: str = "", err: bool = False) -> None:
        if not self.quiet:
            click.echo(text, err=err, file=self.stream)

    def always(self, text: str, err: bool = False) -> None:
        click.echo(text, err=err, file=self.stream)

    @contextlib.contextmanager
    def step(self, name: str):
        start = time.monotonic()
        outcome = {"text": "ok"}
        try:
            yield outcome
        except BaseException:
            self.line(f"  {name:<10} failed ({time.monotonic() - start:.2f} s)")
            raise
        self.line(f"  {name:<10} {outcome['text']} ({time.monotonic() - start:.2f} s)")

    def warn(self, text: str) -> None:
        click.echo(f"warning: {text}", err=True)


def is_tty() -> bool:
    return sys.stdin.isatty()
