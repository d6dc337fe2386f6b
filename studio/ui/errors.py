"""The one way a StudioError reaches the page: a gr.Error showing what went wrong, where, and what to do (or, in a
picker, a red help line under it)."""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from studio.errors import StudioError


def page_error(exc: StudioError) -> gr.Error:
    """The gr.Error that shows a StudioError's three lines in the page."""
    return gr.Error(exc.format())


def help_error(exc: StudioError) -> str:
    """A StudioError as a picker's help line shows it: red, with the fix."""
    return f"<div class='studio-error picker-help'>\n\n⚠ {exc.what}. {exc.fix or ''}\n</div>"


def shows_errors(fn):
    """Wrap a Gradio handler (plain or generator) so a StudioError it raises is shown in the page, not a traceback.

    functools.wraps keeps the handler's signature visible, so Gradio still injects gr.Request and gr.Progress.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except StudioError as exc:
                raise page_error(exc) from None

        return streamed

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise page_error(exc) from None

    return wrapped
