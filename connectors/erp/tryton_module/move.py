"""account.move with a unique external id and an atomic find-or-create-and-post call."""

from __future__ import annotations

from typing import Any

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import Unique, fields
from trytond.pool import PoolMeta
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction

#: Most moves one post_external call takes (the adapter sends at most this many).
POST_EXTERNAL_MAX = 1000


class Move(metaclass=PoolMeta):
    __name__ = "account.move"

    external_id = fields.Char(
        "External ID", readonly=False,
        states={"readonly": Eval("state") == "posted"},
        help="The id of the entry in the system that sent it (rcmflow: the posting id).")

    rcmflow_approval = fields.Text(
        "Refund Approval", states={"readonly": Eval("state") == "posted"},
        help="For a refund: the request, who asked, who approved it in which role and when, "
        "and the refund policy's version and rule (JSON, as rcmflow posted it).")

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ("external_id_unique", Unique(t, t.company, t.external_id),
             "rcmflow_ext.msg_move_external_id_unique"),
        ]
        cls.__rpc__.update({
            "post_external": RPC(readonly=False, fresh_session=False),
        })

    @classmethod
    def copy(cls, moves: list[Any], default: dict[str, Any] | None = None) -> list[Any]:
        default = dict(default or {})
        default.setdefault("external_id", None)  # a copy (cancel, duplicate) is another move
        default.setdefault("rcmflow_approval", None)
        return super().copy(moves, default=default)

    @classmethod
    def post_external(cls, values_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Find or create, then post, each move by its external_id; all in this transaction.

        Returns per input, in order: {id, number, state, external_id, created}.
        """
        keys = [values.get("external_id") for values in values_list]
        if (not keys or len(keys) > POST_EXTERNAL_MAX or None in keys or "" in keys
                or len(set(keys)) != len(keys)):
            raise UserError(gettext("rcmflow_ext.msg_external_batch_keys"))
        company = Transaction().context.get("company")
        domain: list[Any] = [("external_id", "in", keys)]
        if company is not None:
            domain.append(("company", "=", company))
        found = {move.external_id: move for move in cls.search(domain)}
        missing = [values for values in values_list if values["external_id"] not in found]
        created = {move.external_id: move for move in cls.create(missing)} if missing else {}
        drafts = [move for move in [*found.values(), *created.values()]
                  if move.state == "draft"]
        if drafts:
            cls.post(drafts)
        out = []
        for key in keys:
            move = created.get(key) or found[key]
            move = cls(move.id)
            out.append({"id": move.id, "number": move.number, "state": move.state,
                        "external_id": key, "created": key in created})
        return out
