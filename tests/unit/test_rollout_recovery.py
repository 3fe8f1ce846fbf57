"""A promotion or a manual rollback killed between its manifest and its aliases is finished
by the next step (the tick's reconciliation), so the aliases always end where the traffic
is. The registry here is a dict with the four calls the rollout stage makes; the real MLflow
path (kill with SIGKILL, run again) is in tests/integration/test_rollout.py."""

from __future__ import annotations

from types import SimpleNamespace

from cvloop.stages.rollout import _reconcile_stable
from registry.manifest import single


class Aliases:
    def __init__(self, **aliases: str):
        self.aliases = {k.replace("_", "-"): v for k, v in aliases.items()}
        self.tags: dict[str, dict] = {}
        self.moves = 0

    def alias_version(self, alias):
        return self.aliases.get(alias)

    def set_alias(self, alias, version):
        self.aliases[alias] = version
        self.moves += 1

    def delete_alias(self, alias):
        self.aliases.pop(alias, None)

    def get_version(self, version):
        return SimpleNamespace(tags=dict(self.tags.get(version, {})))

    def set_tags(self, version, tags):
        self.tags.setdefault(version, {}).update(tags)


def test_a_promotion_killed_after_its_manifest_is_finished_once():
    reg = Aliases(champion="3", challenger="4")
    m = single("4", stage="stable")
    m.extra = {"promoted": "4", "previous_champion": "3"}
    assert _reconcile_stable(reg, m) == {"promoted": "4"}
    assert reg.aliases == {"champion": "4", "previous-champion": "3"}
    assert reg.tags["4"]["cvloop.rollout.status"] == "champion"
    moves = reg.moves
    assert _reconcile_stable(reg, m) == {}  # again: nothing moves
    assert reg.moves == moves


def test_a_manual_rollback_killed_after_its_manifest_is_finished_once():
    reg = Aliases(champion="4", previous_champion="3")
    m = single("3", stage="stable")
    m.extra = {"rolled_back": "4"}
    out = _reconcile_stable(reg, m, "manual rollback: test")
    assert out == {"rolled-back": "4", "champion": "3"}
    assert reg.aliases == {"champion": "3"}
    assert reg.tags["4"]["cvloop.rollout.status"] == "rolled-back"
    moves = reg.moves
    _reconcile_stable(reg, m, "manual rollback: test")
    assert reg.moves == moves and reg.aliases == {"champion": "3"}


def test_an_automatic_rollback_moves_no_champion():
    reg = Aliases(champion="3", challenger="4")
    m = single("3", stage="stable")
    m.extra = {"rolled_back": "4"}
    assert _reconcile_stable(reg, m, "canary breach") == {"rolled-back": "4"}
    assert reg.aliases == {"champion": "3"} and reg.moves == 0
