"""``forewarn sentiment FILE.csv --text-col COL``: score each post of a CSV file.

Output on stdout is CSV, ``label,compound,terms``, one row per input row in input order:
the label (negative, neutral or positive), the compound score rounded to 4 decimals and the
service-failure terms found, joined with ``;``. Texts are not echoed. The file is read as a
stream, one row at a time, so its size does not matter; ``-`` reads stdin. A progress bar
goes to stderr, and only when stderr is a terminal and the file is big enough for one to help.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import IO, NoReturn

import click

from chalicelib.sentiment import score

# About 1000 posts of tweet length: below this the run takes well under a second.
PROGRESS_MIN_BYTES = 256 * 1024


class InputError(ValueError):
    """The input cannot be read as CSV; the message is one line, ready for the user."""


def score_rows(rows: Iterator[list[str]], column: int) -> Iterator[list[str]]:
    """``[label, compound, terms]`` for each row; a row too short for the column scores ""."""
    for fields in rows:
        result = score(fields[column] if column < len(fields) else "")
        compound = round(result.compound, 4) + 0.0  # + 0.0 turns -0.0 into 0.0
        yield [result.label, f"{compound:.4f}", ";".join(result.terms)]


def _column(header: list[str], wanted: str, source: str) -> int:
    names = [name.strip() for name in header]
    if wanted in names:
        return names.index(wanted)
    folded = [name.casefold() for name in names]
    if wanted.casefold() in folded:
        return folded.index(wanted.casefold())
    available = ", ".join(repr(name) for name in names) or "none"
    raise click.UsageError(f"{source} has no column {wanted!r}; its columns are: {available}")


def _data_rows(reader: Iterator[list[str]], source: str) -> Iterator[list[str]]:
    try:
        for fields in reader:
            if fields:  # a blank line is not a row
                yield fields
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: {exc}") from None


@click.command("sentiment")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--text-col", default="text", show_default=True, help="Name of the column with the text."
)
def sentiment(file: str, text_col: str) -> None:
    """Score the posts in FILE (CSV with a header line; - for stdin); CSV on stdout.

    Output columns: label,compound,terms. Terms are the service failures found, joined
    with ';' (empty when none).
    """
    source = "stdin" if file == "-" else file
    with ExitStack() as stack:
        try:
            binary = _open(file, stack)
        except OSError as exc:
            raise click.FileError(file, hint=exc.strerror or str(exc)) from None
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        # Detached, not closed, when done: closing it would close stdin.
        stack.callback(text.detach)
        reader = csv.reader(text)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            _fail(f"{source}: {exc}")
        if header is None:
            _fail(f"{source} is empty; expected a header line naming the columns")
        column = _column(header, text_col, source)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        try:
            writer.writerow(["label", "compound", "terms"])
            results = score_rows(_data_rows(reader, source), column)
            size = _size(binary)
            if size is not None and size >= PROGRESS_MIN_BYTES and _is_terminal(sys.stderr):
                _write_with_progress(writer.writerow, results, binary, size)
            else:
                writer.writerows(results)
            sys.stdout.flush()
        except InputError as exc:
            _fail(str(exc))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)


def _open(file: str, stack: ExitStack) -> IO[bytes]:
    if file == "-":
        return sys.stdin.buffer
    return stack.enter_context(open(file, "rb"))


def _size(binary: IO[bytes]) -> int | None:
    try:
        return os.fstat(binary.fileno()).st_size if binary.seekable() else None
    except (OSError, io.UnsupportedOperation):
        return None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _write_with_progress(
    write_row: Callable[[list[str]], object],
    rows: Iterator[list[str]],
    binary: IO[bytes],
    size: int,
) -> None:
    # Progress in bytes read: the number of rows is not known without reading the file twice.
    with click.progressbar(length=size, label="scoring", file=sys.stderr) as bar:
        done = 0
        for row in rows:
            write_row(row)
            position = binary.tell()
            if position > done:
                bar.update(position - done)
                done = position


def _fail(message: str) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)
