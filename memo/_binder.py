"""The binder: a function generated once per decorated function, binding its calls.

Python itself then binds every call (defaults, keyword-only parameters, ``*args``, the
TypeErrors of a bad call), exactly and several times faster than ``Signature.bind``.
``CallBinder`` adds what both key builders need on top: ``ignore=`` and self/cls.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Iterable
from typing import Any

from memo._canonical import self_node
from memo.exceptions import ConfigError

__all__ = ["Binder", "CallBinder", "compile_binder", "ignored_names", "make_binder"]

Binder = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[str, Any], ...]]


def ignored_names(ignore: Iterable[str]) -> frozenset[str]:
    """The names given as ``ignore=``, refusing a bare string.

    Raises:
        ConfigError: ``ignore`` is a str.
    """
    if isinstance(ignore, str):  # ignore="db" would otherwise mean ignore=("d", "b")
        raise ConfigError(f"ignore= takes a collection of names, e.g. ignore=({ignore!r},)")
    return frozenset(ignore)


def compile_binder(
    func: Callable[..., Any], skip_first: bool, ignore: frozenset[str]
) -> tuple[Callable[..., tuple[tuple[str, Any], ...]], list[inspect.Parameter]]:
    """Compile a function with ``func``'s parameters that returns ((name, value), ...).

    Also returns ``func``'s parameters. ``skip_first`` leaves self/cls out of the result,
    ``ignore`` the named parameters.

    Raises:
        ConfigError: an unreadable signature, ``ignore`` naming a parameter that ``func``
            does not have, or ``skip_first`` for a function without parameters.
    """
    qualname = getattr(func, "__qualname__", repr(func))
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the signature of {qualname}: {exc}") from exc
    unknown = sorted(ignore - {p.name for p in params})
    if unknown:
        raise ConfigError(
            f"ignore= names {', '.join(map(repr, unknown))}, which {qualname} does not have; "
            f"its parameters are: {', '.join(p.name for p in params) or '(none)'}"
        )
    if skip_first and not params:
        raise ConfigError(f"{qualname} is used as a method but takes no self/cls parameter")
    defaults: dict[str, Any] = {}
    spec, returned = [], []
    star_done = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            spec.append("*")
        star_done = star_done or p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY)
        if p.kind is p.VAR_POSITIONAL:
            spec.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            spec.append(f"**{p.name}")
        elif p.default is p.empty:
            spec.append(p.name)
        else:  # defaults are looked up in the globals, where parameter names cannot shadow
            defaults[f"_d{i}"] = p.default
            spec.append(f"{p.name}=_d{i}")
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            spec.append("/")
        if p.name in ignore:
            continue
        if i == 0 and skip_first:
            if p.kind is p.VAR_POSITIONAL:  # self arrives as the first of *args
                returned.append(f"({p.name!r}, {p.name}[1:]),")
            continue
        returned.append(f"({p.name!r}, {p.name}),")
    name = getattr(func, "__name__", "")
    if not name.isidentifier() or keyword.iskeyword(name):
        name = "bind"
    exec(f"def {name}({', '.join(spec)}):\n    return ({' '.join(returned)})", defaults)
    gen = defaults[name]
    gen.__qualname__ = qualname  # so a bad call raises Python's own message, word for word
    return gen, params


def make_binder(
    func: Callable[..., Any], *, skip_first: bool = False, ignore: Iterable[str] = ()
) -> Binder:
    """Build, once, a function mapping ``(args, kwargs)`` to ``((name, value), ...)``.

    Defaults are applied and parameters come in signature order; ``*args`` is one entry
    holding a tuple, ``**kwargs`` one holding a dict. ``skip_first`` drops self/cls and
    ``ignore`` the named parameters. A call Python would reject raises the same TypeError.

    Raises:
        ConfigError: ``ignore`` names a parameter that ``func`` does not have.
    """
    gen = compile_binder(func, skip_first, ignored_names(ignore))[0]

    def binder(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        return gen(*args, **kwargs)

    return binder


class CallBinder:
    """Binding plus self/cls handling, common to function and AI keys.

    ``bind(*args, **kwargs)`` returns ((name, value), ...) without self/cls and the
    ignored parameters. ``keyed_types`` remembers, per class of self, whether it defines
    ``__memo_key__()``: the fast map of function keys reads it on every method call.
    """

    def __init__(self, func: Callable[..., Any], *, method: bool, ignore: Iterable[str]) -> None:
        self.ignore = ignored_names(ignore)
        self.bind, self.params = compile_binder(func, method, self.ignore)
        self.method = method
        self.keyed_types: dict[type, bool] = {}

    def _self_keyed(self, obj: Any) -> bool:
        """Does self's class define __memo_key__? Cached per class: asked on every call."""
        known = self.keyed_types.get(type(obj))
        if known is None:
            if len(self.keyed_types) >= 256:
                self.keyed_types.clear()
            known = getattr(type(obj), "__memo_key__", None) is not None
            self.keyed_types[type(obj)] = known
        return known

    def self_node(
        self, owner: str, args: tuple[Any, ...], kwargs: dict[str, Any], thr: int
    ) -> list[Any] | None:
        """The node of self's ``__memo_key__()``, or None when self stays out of the key.

        Raises:
            KeyDerivationError: ``__memo_key__()`` returned a value with no stable encoding.
        """
        obj: Any = args[0] if args else kwargs.get(self.params[0].name)
        if not self._self_keyed(obj):
            return None
        return self_node(owner, obj, thr)
