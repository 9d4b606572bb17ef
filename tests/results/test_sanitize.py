"""HTML a task wrote is shown only through the allow-list: no script can survive it."""

from __future__ import annotations

import pytest

from scripthut.outputs import parse_listing
from scripthut.sanitize import sanitize_html


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<script>alert(1)</script><p>x</p>", "<p>x</p>"),
        ('<img src=x onerror="alert(1)">', "<img>"),
        ('<a href="javascript:alert(1)">y</a>', '<a rel="noopener noreferrer nofollow">y</a>'),
        ('<a href=" JaVa\tscript:x">y</a>', '<a rel="noopener noreferrer nofollow">y</a>'),
        (
            '<a href="https://e.org/?a=1&b=2">y</a>',
            '<a href="https://e.org/?a=1&amp;b=2" rel="noopener noreferrer nofollow">y</a>',
        ),
        ("<style>body{}</style><b>k</b>", "<b>k</b>"),
        ("<svg><script>x</script></svg>t", "t"),
        ("<iframe src=//e.org></iframe><div>d", "<div>d</div>"),
        (
            "<table><tr><td colspan=2 onclick=x>1</td></tr></table>",
            '<table><tr><td colspan="2">1</td></tr></table>',
        ),
        ("&lt;script&gt;", "&lt;script&gt;"),
        ('<img src="data:image/png;base64,AAAA">', '<img src="data:image/png;base64,AAAA">'),
        ('<img src="data:image/svg+xml;base64,AAAA">', "<img>"),
        ("<form><input value=1></form>x", "x"),
        ("</b></p>text", "text"),
    ],
)
def test_only_allowed_markup_survives(dirty: str, clean: str) -> None:
    assert sanitize_html(dirty) == clean


def test_a_listing_reply_with_awkward_names_parses() -> None:
    reply = (
        b"D\0/o/a.1.outputs\0F\0line\nbreak.txt\0003\0001.5\0F\0sub/x.csv\0007\0002\0"
        b"S\0sum\0text\0D\0/o/b.1.outputs\0"
    )
    found = parse_listing(reply)
    a = found["/o/a.1.outputs"]
    assert [(f.path, f.size) for f in a.files] == [("line\nbreak.txt", 3), ("sub/x.csv", 7)]
    assert a.summary == "sum"  # NULs were removed by the script; a field ends at one
    assert found["/o/b.1.outputs"].files == ()
    capped = parse_listing(b"D\0d\0" + b"F\0x\0001\0001\0" * 3, limit=2)
    assert capped["d"].truncated and len(capped["d"].files) == 2


def _ts_list(text: str, name: str) -> set[str]:
    import re

    found = re.search(rf"export const {name} = (?:new Set\()?\[(.*?)\]", text, re.S)
    assert found, name
    return set(re.findall(r'"([^"]*)"', found.group(1)))


def test_the_front_end_sanitises_markdown_by_the_same_rules() -> None:
    """Rendered Markdown is sanitised in the browser (js/widgets/components/sanitize.ts);
    its lists are the server's, so Markdown and HTML outputs keep the same rules."""
    from pathlib import Path

    from scripthut import sanitize

    ts = Path(__file__).parents[2] / "js" / "widgets" / "components" / "sanitize.ts"
    text = ts.read_text()
    assert _ts_list(text, "ALLOWED_TAGS") == set(sanitize.ALLOWED_TAGS)
    assert _ts_list(text, "DROP_WITH_CONTENT") == set(sanitize.DROP_WITH_CONTENT)
    assert _ts_list(text, "ALLOWED_ATTRS") == set(sanitize.ALLOWED_ATTRS)
    assert _ts_list(text, "LINK_SCHEMES") == set(sanitize._LINK_SCHEMES)
    assert _ts_list(text, "IMAGE_SCHEMES") == set(sanitize._IMAGE_SCHEMES)
