"""Which form of a data object to believe from what the peers list: whole copies, or the
shares of an erasure scheme (:mod:`chunkvault.erasure`). Pure.

A chunk object or pack is stored in one form, but a listing may show others beside it: a
peer may list a share key it made up, or copies left from before erasure was set. The
form read is the one this machine wrote (its catalog row), else the one most peers list,
whole copies on a tie: one hostile peer can never make the others' copies or shares
unread.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from chunkvault.erasure import HEADER_SIZE
from chunkvault.layout import DataKey, LayoutError, parse_data_key

#: A form: None for whole copies, else a scheme as the catalog writes it ("3-2").
Form = str | None


class Unset:
    """No form of this machine's own (see :func:`pick`)."""


UNSET = Unset()


@dataclass(frozen=True)
class Piece:
    """One peer's copy or share of an object, as listed."""

    peer: str
    key: DataKey
    size: int


@dataclass(frozen=True)
class Held:
    """An object in the form that is read: its pieces, and the peers that list only
    pieces of another form (left out)."""

    id: str
    form: Form
    pieces: list[Piece]
    others: list[str]

    @property
    def object_size(self) -> int:
        """Its size as the listing shows it (see :func:`object_size`)."""
        first = self.pieces[0]
        return object_size(first.size, first.key)


def dominant_form(holders: Mapping[Form, Collection[str]]) -> Form:
    """The form most peers list (whole copies on a tie)."""
    return max(holders, key=lambda form: (len(holders[form]), form is None, form or ""))


def group(
    vault_id: str, listed: Iterable[tuple[str, str, int]], kind: str
) -> dict[str, dict[Form, list[Piece]]]:
    """The pieces of every ``kind`` object in ``listed`` ((peer, key, size); keys that are
    not a chunk object's, pack's or share's are skipped), by object id and form."""
    found: dict[str, dict[Form, list[Piece]]] = {}
    for peer, key, size in listed:
        try:
            parsed = parse_data_key(vault_id, key)
        except LayoutError:
            continue
        if parsed.kind == kind:
            form = None if parsed.scheme is None else str(parsed.scheme)
            found.setdefault(parsed.id, {}).setdefault(form, []).append(Piece(peer, parsed, size))
    return found


def pick(object_id: str, forms: Mapping[Form, list[Piece]], own: Form | Unset = UNSET) -> Held:
    """The object in the form that is read: ``own`` (the form this machine wrote it in)
    when the peers list it, else :func:`dominant_form`."""
    if not isinstance(own, Unset) and own in forms:
        form = own
    else:
        form = dominant_form({f: [p.peer for p in ps] for f, ps in forms.items()})
    chosen = {p.peer for p in forms[form]}
    others = {p.peer for f, ps in forms.items() if f != form for p in ps} - chosen
    return Held(object_id, form, list(forms[form]), sorted(others))


def object_size(listed: int, key: DataKey) -> int:
    """An object's size from the listed size of a copy, or of a share (then its padded
    size: the object's rounded up to a multiple of k, as shares are cut)."""
    if key.scheme is None:
        return listed
    return max(0, listed - HEADER_SIZE) * key.scheme.data
