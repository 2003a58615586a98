"""What a page is drawn from: the sources, who is looking and what their key allows, and the
panels a page is made of (a new figure is a function and one line in its page's list)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.errors import HeadwaterError
from headwater.security.scopes import Permission
from headwater.ui.html import Safe, Viewer, esc, section
from headwater.ui.sources import UiSources

Drawn = tuple[str, Safe, list[tuple[str, str]]]  # title, body, breadcrumbs


class NotFound(HeadwaterError):
    """A page of something the project does not define."""


class Page:
    """One request for a page."""

    def __init__(self, sources: UiSources, viewer: Viewer, key: Any, query: dict[str, str]) -> None:
        self.sources = sources
        self.viewer = viewer
        self._key = key
        self.query = query
        self.now = sources.clock()

    def may(self, action: str, resource: str | None = None) -> bool:
        """Whether the viewer's key allows an action (every action when auth is off)."""
        access = self.sources.access
        if access is None:
            return True
        return self._key is not None and access.allows(self._key, Permission(action, resource))

    def owns(self, owner: str) -> bool:
        """Whether the viewer may see the values of what ``owner`` owns (events, value
        summaries): a key of that team, or an admin key; anyone when auth is off."""
        if self.sources.access is None:
            return True
        return self._key is not None and (self._key.team == owner or self.may("admin"))


@dataclass(frozen=True)
class Panel:
    """A titled part of a page: ``draw(page, *subject)`` returns its HTML."""

    title: str
    draw: Callable[..., Safe]


def panels(page: Page, listed: Sequence[Panel], *subject: Any) -> Safe:
    return Safe("".join(section(p.title, p.draw(page, *subject)) for p in listed))


def action_button(label: str, title: str, url: str, body: dict[str, Any] | None = None) -> Safe:
    """A button that opens the confirmation dialog and, confirmed with a reason, posts
    ``body`` (plus the reason) to ``url``."""
    import json

    return Safe(
        f'<button type="button" class="secondary" data-action data-title="{esc(title)}" '
        f'data-url="{esc(url)}" data-body="{esc(json.dumps(body or {}))}" '
        f'data-reason-required="1">{esc(label)}</button>'
    )


DIALOG = Safe(
    '<dialog id="confirm" aria-labelledby="confirm-title"><form method="dialog">'
    '<h2 id="confirm-title" data-title></h2>'
    '<p><label for="confirm-reason">Reason (kept in the history)</label>'
    '<textarea id="confirm-reason" name="reason" maxlength="500" required></textarea></p>'
    '<p class="error" data-error role="alert"></p>'
    '<p><button type="submit">Confirm</button> '
    '<button type="button" class="secondary" data-cancel>Cancel</button></p>'
    "</form></dialog>"
)
