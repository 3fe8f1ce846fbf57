"""Every key of params.yaml is read by the code it configures (issue: every knob does
something).

A key that is validated and printed but read nowhere misleads the person who tunes it. This
test walks the code's syntax trees (cvloop/, flows/, tasks/, registry/) and finds, for each
leaf of params.yaml, an attribute read of that key on a value that is that section: a chain
(``p.rollout.canary.min_frames``), a name bound to the section (``c = p.rollout.canary``,
``for s in p.rollout.stages``), a parameter annotated with the section's model
(``gate: GateParams``), ``getattr(section, "key")`` or ``section.model_dump()`` (every key).
The validators in cvloop/config/params.py do not count: checking a value is not using it.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

from cvloop.config.params import Params

REPO = Path(__file__).resolve().parents[2]
CODE = ("cvloop", "flows", "tasks", "registry")


def _model(annotation) -> type[BaseModel] | None:
    """The section model of a field's annotation (``X``, ``list[X]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model(arg)
        if found is not None:
            return found
    return None


def _sections() -> dict[str, type[BaseModel]]:
    """Model class name -> model, for Params and every nested section."""
    out: dict[str, type[BaseModel]] = {}
    todo = [Params]
    while todo:
        m = todo.pop()
        out[m.__name__] = m
        todo += [sub for f in m.model_fields.values() if (sub := _model(f.annotation))]
    return out


SECTIONS = _sections()


def _field_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    for fname, f in model.model_fields.items():
        if name in (fname, f.alias):
            return _model(f.annotation)
    return None


def _yaml_leaves() -> list[tuple[str, ...]]:
    """Every leaf key of params.yaml (a list of sections, like rollout.stages, is walked
    through its items)."""
    leaves: set[tuple[str, ...]] = set()

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                walk(item, path)
        else:
            leaves.add(path)

    walk(yaml.safe_load((REPO / "params.yaml").read_text()), ())
    return sorted(leaves)


class _Module(ast.NodeVisitor):
    """One module: the names bound to sections (flow-insensitive), and what it reads."""

    def __init__(self, tree: ast.Module, skip_validators: bool):
        self.tree = tree
        self.names: dict[str, set[type[BaseModel]]] = {}
        self.reads: set[tuple[str, str]] = set()
        self.skip_validators = skip_validators

    def bind(self, name: str, models: set[type[BaseModel]]) -> bool:
        have = self.names.setdefault(name, set())
        new = not models <= have
        have |= models
        return new

    def models_of(self, node: ast.AST) -> set[type[BaseModel]]:
        if isinstance(node, ast.Name):
            return self.names.get(node.id, set())
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.models_of(v) for v in node.values))
        if isinstance(node, ast.IfExp):
            return self.models_of(node.body) | self.models_of(node.orelse)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and ast.unparse(node) in self.names:
                return self.names[ast.unparse(node)]  # self.p = ctx.params.serve
            top = _field_model(Params, node.attr)
            if top is not None:
                return {top}
            return {sub for m in self.models_of(node.value) if (sub := _field_model(m, node.attr))}
        if isinstance(node, ast.Subscript):
            return self.models_of(node.value)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "model_copy"  # a copy with some keys changed
        ):
            return self.models_of(node.func.value)
        return set()

    def bind_local(self) -> bool:
        changed = False
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                models = self.models_of(node.value)
                for t in targets:
                    if models and isinstance(t, ast.Name):
                        changed |= self.bind(t.id, models)
                    elif models and isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                        changed |= self.bind(ast.unparse(t), models)
            elif isinstance(node, ast.For | ast.comprehension):
                models = self.models_of(node.iter)
                if isinstance(node.target, ast.Name) and models:
                    changed |= self.bind(node.target.id, models)
            elif isinstance(node, ast.arg) and node.annotation is not None:
                words = set(
                    ast.unparse(node.annotation).strip("'\"").replace("|", " ")
                    .replace("[", " ").replace("]", " ").split()
                )  # fmt: skip
                for name in words & set(SECTIONS):
                    changed |= self.bind(node.arg, {SECTIONS[name]})
            elif isinstance(node, ast.ClassDef) and node.name in SECTIONS:
                changed |= self.bind("self", {SECTIONS[node.name]})
        return changed

    def calls(self):
        """(callee name, positional index or keyword, models) of each section passed on."""
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("submit", "fn") and isinstance(
                f.value, ast.Name):  # fmt: skip
                f = f.value  # a Prefect task's .submit / .fn: the function it wraps
            callee = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else None  # fmt: skip
            if callee is None:
                continue
            via_attr = isinstance(f, ast.Attribute)
            for i, a in enumerate(node.args):
                if models := self.models_of(a):
                    yield callee, i, via_attr, models
            for kw in node.keywords:
                if kw.arg and (models := self.models_of(kw.value)):
                    yield callee, kw.arg, via_attr, models

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        decorators = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
        if self.skip_validators and decorators & {"model_validator", "field_validator"}:
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        for m in self.models_of(node.value):
            if node.attr in m.model_fields:
                self.reads.add((m.__name__, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "model_dump":
            for m in self.models_of(f.value):
                self.reads.update((m.__name__, k) for k in m.model_fields)
        if (
            isinstance(f, ast.Name)
            and f.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            for m in self.models_of(node.args[0]):
                self.reads.add((m.__name__, node.args[1].value))
        self.generic_visit(node)


def _reads(modules: list[_Module]) -> set[tuple[str, str]]:
    """What the modules read, following a section into the functions it is passed to (by
    name: every def of that name, in any module)."""
    defs: dict[str, list[tuple[_Module, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
    for mod in modules:
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defs.setdefault(node.name, []).append((mod, node))
    stage_tasks: set[str] = set()  # x_task = stage_task(x, ...): x_task(...) runs x(ctx, ...)
    for mod in modules:
        for node in mod.tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and ast.unparse(node.value.func) == "stage_task" and node.value.args
                    and isinstance(node.value.args[0], ast.Name)
                    and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):  # fmt: skip
                name = node.targets[0].id
                defs.setdefault(name, []).extend(defs.get(node.value.args[0].id, []))
                stage_tasks.add(name)
    for _ in range(10):
        changed = False
        for mod in modules:
            changed |= mod.bind_local()
        for mod in modules:
            for callee, where, via_attr, models in list(mod.calls()):
                for target, fn in defs.get(callee, []):
                    if isinstance(fn, ast.ClassDef):  # a dataclass built from a section
                        continue
                    params = [*fn.args.posonlyargs, *fn.args.args]
                    if via_attr and params and params[0].arg in ("self", "cls"):
                        params = params[1:]
                    if callee in stage_tasks and params and params[0].arg == "ctx":
                        params = params[1:]
                    names = [a.arg for a in (*params, *fn.args.kwonlyargs)]
                    if isinstance(where, int):
                        name = names[where] if where < len(params) else None
                    else:
                        name = where if where in names else None
                    if name is not None:
                        changed |= target.bind(name, models)
        if not changed:
            break
    out: set[tuple[str, str]] = set()
    for mod in modules:
        mod.visit(mod.tree)
        out |= mod.reads
    return out


def _code_reads() -> set[tuple[str, str]]:
    own = REPO / "cvloop" / "config" / "params.py"
    return _reads([
        _Module(ast.parse(path.read_text()), skip_validators=path == own)
        for folder in CODE for path in sorted((REPO / folder).rglob("*.py"))
    ])  # fmt: skip


def _owner(path: tuple[str, ...]) -> tuple[type[BaseModel], str]:
    model: type[BaseModel] = Params
    for part in path[:-1]:
        sub = _field_model(model, part)
        assert sub is not None, f"params.yaml {'.'.join(path)}: no section {part} in the model"
        model = sub
    return model, path[-1]


def test_every_key_of_params_yaml_is_read_by_the_code():
    reads = _code_reads()
    unread = []
    for leaf in _yaml_leaves():
        model, key = _owner(leaf)
        field = next((n for n, f in model.model_fields.items() if key in (n, f.alias)), key)
        if (model.__name__, field) not in reads:
            unread.append(".".join(leaf))
    assert not unread, (
        f"keys of params.yaml that no code reads: {unread}; wire each to what it names, or "
        "remove it (and name it in cvloop.config.params.REPLACED_KEYS)"
    )


def test_the_check_sees_a_key_that_is_only_validated():
    """The walk is not blind: a section key read only in a validator is unread, one read
    through an alias in a function is read."""
    src = (
        "class HoldoutParams:\n"
        "    @model_validator(mode='after')\n"
        "    def _range(self):\n"
        "        return self.max_frames\n"
        "def f(ctx):\n"
        "    hp = ctx.params.holdout\n"
        "    return hp.min_frames\n"
    )
    reads = _reads([_Module(ast.parse(src), skip_validators=True)])
    assert ("HoldoutParams", "min_frames") in reads
    assert ("HoldoutParams", "max_frames") not in reads
