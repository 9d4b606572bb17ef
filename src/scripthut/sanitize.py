"""HTML a task wrote, made safe to show: an allow-list of tags and attributes, nothing else.

Scripts, styles, frames, forms and event handlers are dropped with their content where
it is code; links keep only http(s), mailto and fragment targets, images only data:image
(a task's report cannot make the browser fetch anything). Everything else is escaped text.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset(
    [
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    ]
)
VOID_TAGS = frozenset({"br", "col", "hr", "img"})
DROP_WITH_CONTENT = frozenset(
    {"script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math"}
)
ALLOWED_ATTRS = frozenset(
    {"href", "src", "alt", "title", "colspan", "rowspan", "align", "width", "height", "id"}
)
_LINK_SCHEMES = ("http://", "https://", "mailto:", "#")
_IMAGE_SCHEMES = ("data:image/png;", "data:image/jpeg;", "data:image/gif;", "data:image/webp;")


def sanitize_html(text: str) -> str:
    """`text` with only allowed tags and attributes left; safe to insert into a page."""
    parser = _Sanitizer()
    parser.feed(text)
    parser.close()
    return parser.result()


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping += 1
            return
        if self.dropping or tag not in ALLOWED_TAGS:
            return
        kept = "".join(
            f' {name}="{html.escape(value, quote=True)}"'
            for name, value in attrs
            if value is not None and _allowed(tag, name, value)
        )
        if tag == "a":
            kept += ' rel="noopener noreferrer nofollow"'
        self.out.append(f"<{tag}{kept}>")
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS and self.open and self.open[-1] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping or tag not in self.open:
            return
        while self.open:
            last = self.open.pop()
            self.out.append(f"</{last}>")
            if last == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def _allowed(tag: str, name: str, value: str) -> bool:
    if name not in ALLOWED_ATTRS:
        return False
    plain = "".join(value.split()).lower()
    if name == "href":
        return plain.startswith(_LINK_SCHEMES)
    if name == "src":
        return tag == "img" and plain.startswith(_IMAGE_SCHEMES)
    return True
