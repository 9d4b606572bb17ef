"""What a widget last sent, and the smallest message that brings a view up to date.

A view holds `meta` (a flat dict) and named tables of rows keyed by one field. The
kernel keeps a copy of what it last sent; a patch carries only the rows that were added
or removed and, for a changed row, its key and the fields that changed. Every message
has a sequence number so a view can tell when it missed one and ask for a snapshot.

Rows handed to `patch` may be mutated afterwards by their owner: what is kept here is a
copy. Field values are replaced, never mutated in place (a new list, not an appended
one), so a shallow copy is enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
Rows = Mapping[str, Row]
_MISSING = object()


@dataclass(slots=True)
class TableDiffer:
    """The rows of one table as last sent, keyed by `key`."""

    key: str
    sent: dict[str, Row] = field(default_factory=dict)

    def snapshot(self, rows: Rows) -> dict[str, Any]:
        self.sent = {k: dict(r) for k, r in rows.items()}
        return {"key": self.key, "rows": list(self.sent.values())}

    def patch(self, rows: Rows, touched: Iterable[str] | None = None) -> dict[str, Any] | None:
        """`{"set": [...], "del": [...]}` for what differs; None when nothing does.

        `touched` limits the comparison to those keys (the caller knows nothing else
        changed); None compares every row.
        """
        keys = (self.sent.keys() | rows.keys()) if touched is None else set(touched)
        upserts: list[Row] = []
        deleted: list[str] = []
        for k in keys:
            new = rows.get(k)
            old = self.sent.get(k)
            if new is None:
                if old is not None:
                    deleted.append(k)
                    del self.sent[k]
            elif old is None:
                self.sent[k] = dict(new)
                upserts.append(dict(new))
            else:
                changed = _changed_fields(old, new)
                if changed:
                    old.update(changed)
                    upserts.append({self.key: new[self.key], **changed})
        if not upserts and not deleted:
            return None
        out: dict[str, Any] = {}
        if upserts:
            out["set"] = upserts
        if deleted:
            out["del"] = sorted(deleted)
        return out


def _changed_fields(old: Row, new: Row) -> Row:
    changed = {f: v for f, v in new.items() if old.get(f, _MISSING) != v}
    for gone in old.keys() - new.keys():
        if old[gone] is not None:
            changed[gone] = None
    return changed


class ViewState:
    """Meta and tables as last sent to the front end, and the sequence of messages."""

    def __init__(self, tables: Mapping[str, str]) -> None:
        self.tables = {name: TableDiffer(key) for name, key in tables.items()}
        self.meta: dict[str, Any] = {}
        self.seq = 0
        self.has_baseline = False

    def snapshot(self, meta: Mapping[str, Any], tables: Mapping[str, Rows]) -> dict[str, Any]:
        """The whole state; what is sent from now on is relative to it."""
        self.seq += 1
        self.meta = dict(meta)
        self.has_baseline = True
        return {
            "type": "snapshot",
            "seq": self.seq,
            "meta": dict(self.meta),
            "tables": {name: d.snapshot(tables.get(name, {})) for name, d in self.tables.items()},
        }

    def patch(
        self,
        meta: Mapping[str, Any],
        tables: Mapping[str, Rows],
        touched: Mapping[str, Iterable[str]] | None = None,
    ) -> dict[str, Any] | None:
        """Changes since the last message; None when there are none (or no baseline yet).

        `touched` maps a table to the keys that may have changed; a table missing from
        it is compared in full. None compares everything.
        """
        if not self.has_baseline:
            return None
        meta_changes = _changed_fields(self.meta, dict(meta))
        table_patches: dict[str, Any] = {}
        for name, differ in self.tables.items():
            keys = None if touched is None else touched.get(name)
            if touched is not None and name in touched and not keys:
                continue
            patch = differ.patch(tables.get(name, {}), keys)
            if patch is not None:
                table_patches[name] = patch
        if not meta_changes and not table_patches:
            return None
        self.meta.update(meta_changes)
        self.seq += 1
        out: dict[str, Any] = {"type": "patch", "seq": self.seq}
        if meta_changes:
            out["meta"] = meta_changes
        if table_patches:
            out["tables"] = table_patches
        return out
