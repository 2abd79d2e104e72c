"""What sandboxed code may touch: RestrictedPython guards, builtins, module proxies, AST rewrite.

Measured (see shared/notes/sandbox-hardening.md): the holes of a textbook RestrictedPython setup
are in what the integrator hands over. So imports return read-only proxies of named functions,
never module objects; attribute access refuses modules, `format`/`format_map` and `mro`; builtins
are an explicit allow-list without BaseException/SystemExit/type/getattr.
"""

from __future__ import annotations

import ast
import collections
import functools
import operator
import random as _random
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

__all__ = [
    "ALLOWED_MODULES",
    "CappedPrinter",
    "ModuleProxy",
    "PolicyViolation",
    "SandboxTimeout",
    "build_globals",
    "compile_user_code",
    "guarded_getattr",
]

USER_FILENAME = "<repl>"
SANDBOX_MODULE = "__sandbox__"


class SandboxTimeout(BaseException):
    """Raised in the worker's main thread by the soft timer; not reachable from user code."""


class PolicyViolation(Exception):
    """Sandboxed code asked for something the policy refuses (import, attribute)."""


class ModuleProxy:
    """A read-only namespace of vetted callables standing in for a module."""

    __slots__ = ("_members", "_name")

    def __init__(self, name: str, members: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", types.MappingProxyType(dict(members)))

    def __getattr__(self, attr: str) -> Any:
        members = object.__getattribute__(self, "_members")
        if attr in members:
            return members[attr]
        name = object.__getattribute__(self, "_name")
        raise AttributeError(
            f"module {name!r} in the sandbox has no {attr!r}; available: {', '.join(members)}"
        )

    def __setattr__(self, attr: str, value: Any) -> None:
        raise PolicyViolation("sandbox modules are read-only")

    def __dir__(self) -> list[str]:
        return list(object.__getattribute__(self, "_members"))

    def __repr__(self) -> str:
        return f"<sandbox module {object.__getattribute__(self, '_name')}>"


_MODULE_MEMBERS: dict[str, Sequence[str]] = {
    "re": [
        "compile",
        "search",
        "match",
        "fullmatch",
        "findall",
        "finditer",
        "sub",
        "subn",
        "split",
        "escape",
        "purge",
        "IGNORECASE",
        "I",
        "MULTILINE",
        "M",
        "DOTALL",
        "S",
        "VERBOSE",
        "X",
        "ASCII",
        "A",
        "error",
        "Pattern",
        "Match",
    ],
    "json": ("loads", "dumps", "JSONDecodeError"),
    "math": tuple(n for n in dir(__import__("math")) if not n.startswith("_")),
    "statistics": [
        "mean",
        "fmean",
        "geometric_mean",
        "harmonic_mean",
        "median",
        "median_low",
        "median_high",
        "median_grouped",
        "mode",
        "multimode",
        "pstdev",
        "pvariance",
        "stdev",
        "variance",
        "quantiles",
        "StatisticsError",
    ],
    "collections": ("Counter", "defaultdict", "OrderedDict", "deque", "namedtuple", "ChainMap"),
    "itertools": tuple(n for n in dir(__import__("itertools")) if not n.startswith("_")),
    "functools": ("reduce", "partial", "lru_cache", "cache", "cmp_to_key", "total_ordering"),
    "heapq": [
        "heappush",
        "heappop",
        "heapify",
        "heapreplace",
        "heappushpop",
        "nlargest",
        "nsmallest",
        "merge",
    ],
    "bisect": ("bisect", "bisect_left", "bisect_right", "insort", "insort_left", "insort_right"),
    "string": [
        "ascii_letters",
        "ascii_lowercase",
        "ascii_uppercase",
        "digits",
        "hexdigits",
        "octdigits",
        "punctuation",
        "printable",
        "whitespace",
        "capwords",
        "Template",
    ],
    "textwrap": ("wrap", "fill", "dedent", "indent", "shorten"),
    "difflib": [
        "SequenceMatcher",
        "get_close_matches",
        "unified_diff",
        "context_diff",
        "ndiff",
        "Differ",
    ],
    "datetime": ("date", "datetime", "time", "timedelta", "timezone", "MINYEAR", "MAXYEAR"),
    "hashlib": ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s"),
    "base64": [
        "b64encode",
        "b64decode",
        "urlsafe_b64encode",
        "urlsafe_b64decode",
        "b32encode",
        "b32decode",
        "b16encode",
        "b16decode",
    ],
    "unicodedata": [
        "lookup",
        "name",
        "decimal",
        "digit",
        "numeric",
        "category",
        "bidirectional",
        "combining",
        "east_asian_width",
        "mirrored",
        "decomposition",
        "normalize",
        "is_normalized",
        "unidata_version",
    ],
}
_RANDOM_METHODS = [
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "seed",
    "betavariate",
    "expovariate",
    "triangular",
]

ALLOWED_MODULES: tuple[str, ...] = tuple(sorted([*_MODULE_MEMBERS, "random"]))


def _build_proxy(name: str, rng: _random.Random) -> ModuleProxy:
    if name == "random":
        return ModuleProxy("random", {m: getattr(rng, m) for m in _RANDOM_METHODS})
    module = __import__(name)
    members = {}
    for member in _MODULE_MEMBERS[name]:
        value = getattr(module, member, None)
        if value is None or isinstance(value, types.ModuleType):
            continue
        members[member] = value
    if name == "functools":
        members["partial"] = SafePartial
    return ModuleProxy(name, members)


#: Modules that allowed C code imports for itself (datetime's strftime imports `time`). C code
#: calls `__import__(name, globals, globals, [], 0)` with a list as `fromlist`; an import
#: statement passes None or a tuple, and sandboxed code cannot call `__import__` itself (the
#: name is private), so only C code gets these, and C code never hands them back.
_C_INTERNAL_IMPORTS = frozenset({"time", "_strptime"})


def make_importer(rng: _random.Random) -> Callable[..., Any]:
    """A guarded `__import__` handing out one cached proxy per module per session."""
    cache: dict[str, ModuleProxy] = {}

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if type(fromlist) is list and level == 0 and name in _C_INTERNAL_IMPORTS:
            return sys.modules.get(name) or __import__(name)
        if level != 0 or name not in ALLOWED_MODULES:
            raise ImportError(
                f"import of {name!r} is not allowed in the sandbox; "
                f"allowed modules: {', '.join(ALLOWED_MODULES)}"
            )
        if name not in cache:
            cache[name] = _build_proxy(name, rng)
        return cache[name]

    return guarded_import


_DENIED_ATTRS = frozenset({"format", "format_map", "mro"}) | frozenset(INSPECT_ATTRIBUTES)
_FAST_TYPES = frozenset({str, list, dict, set, frozenset, tuple, int, float, bytes, bool})
#: (exact type, name) pairs the checks below would allow anyway: the public methods of the
#: builtin value types. One set lookup instead of three checks keeps `out.append(x)`,
#: `line.split()` and `d.get(k)` loops cheap.
_SAFE_ATTRS = frozenset(
    (kind, name)
    for kind in _FAST_TYPES
    for name in dir(kind)
    if not name.startswith("_") and name not in _DENIED_ATTRS
)


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    """`_getattr_`: no private names, no modules, no format/format_map/mro, no frames.

    Covers what `safer_getattr` checks (underscore names, `str.format`) for every object. Builtin
    container/str types take a fast path: their public attributes are all plain methods.
    """
    if (type(obj), name) in _SAFE_ATTRS:
        return getattr(obj, name)
    if type(name) is not str or name.startswith("_") or name in _DENIED_ATTRS:
        raise PolicyViolation(f"access to attribute {name!r} is not allowed in the sandbox")
    value = getattr(obj, name, *default)
    if type(obj) in _FAST_TYPES:
        return value
    if isinstance(value, types.ModuleType):
        raise PolicyViolation(f"attribute {name!r} is a module; modules are not reachable")
    return value


_INPLACE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "|=": operator.ior,
    "^=": operator.ixor,
    "&=": operator.iand,
    "@=": operator.imatmul,
}


def inplacevar(op: str, x: Any, y: Any) -> Any:
    """`_inplacevar_`: `x op= y` for names."""
    try:
        fn = _INPLACE_OPS[op]
    except KeyError:
        raise PolicyViolation(f"operator {op!r} is not allowed") from None
    return fn(x, y)


_WRITABLE_EXACT = frozenset({dict, list})
_WRITABLE_BASES: tuple[type, ...] = (dict, list, collections.deque)


def guarded_write(obj: Any) -> Any:
    """`_write_`: which objects `x[k] = v`, `del x[k]` and `x.a = v` may change.

    RestrictedPython's `full_write_guard` allows exactly `dict` and `list`, so `Counter`,
    `defaultdict`, `OrderedDict` and `deque` (the containers models count with) refused item
    assignment. Subclasses of these are safe: sandboxed code cannot define classes at all (no
    `__build_class__`), so their writes are the builtin ones. Everything else goes through the
    original guard (which refuses attribute writes on everything the sandbox hands out).
    """
    if type(obj) in _WRITABLE_EXACT or isinstance(obj, _WRITABLE_BASES):
        return obj
    return full_write_guard(obj)


def aug_attr(obj: Any, name: str, op: str, value: Callable[[], Any]) -> None:
    """`obj.name op= value()` with `obj` evaluated once by the caller, guarded read and write."""
    current = guarded_getattr(obj, name)
    setattr(guarded_write(obj), name, inplacevar(op, current, value()))


class SandboxPrint:
    """What the name `print` is inside the sandbox."""

    __slots__ = ("_target",)

    def __init__(self, target: Callable[..., None]) -> None:
        self._target = target

    def __call__(self, *objects: Any, **kwargs: Any) -> None:
        self._target(*objects, **kwargs)

    def __repr__(self) -> str:
        return "<built-in function print>"


class SafePartial:
    """`functools.partial` for sandboxed code: calls through, and exposes neither the wrapped
    function (`.func` handed code a bound method of the host's printer) nor an address."""

    __slots__ = ("_args", "_func", "_kwargs")

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError("the first argument of partial must be callable")
        self._func, self._args, self._kwargs = func, args, kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*self._args, *args, **{**self._kwargs, **kwargs})

    def __repr__(self) -> str:
        name = getattr(self._func, "__name__", None) or type(self._func).__name__
        if isinstance(self._func, SandboxPrint):
            name = "print"
        return f"functools.partial({name}, ...)"


class CappedPrinter:
    """One print collector per call, shared by every scope: stores at most `cap` characters.

    It counts everything printed: printing 1 GB costs time (bounded by the timeout), no memory.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.stored = 0
        self.total = 0
        # `print` as sandboxed code sees it: a callable with nothing to reach through and a
        # repr without an address (a bound method handed code this printer and its address)
        self._call_print = SandboxPrint(self._emit)

    def __call__(self, _getattr_: Any = None) -> CappedPrinter:  # RestrictedPython's `_print_(...)`
        return self

    def write(self, text: str) -> None:
        text = str(text)
        self.total += len(text)
        room = self.cap - self.stored
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.stored += len(piece)

    def _emit(self, *objects: Any, **kwargs: Any) -> None:
        kwargs.pop("file", None)
        kwargs.pop("flush", None)
        sep = kwargs.pop("sep", " ")
        end = kwargs.pop("end", "\n")
        sep = " " if sep is None else str(sep)
        end = "\n" if end is None else str(end)
        self.write(sep.join(str(o) for o in objects) + end)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus the idioms models write constantly.

    - `x[k] op= v` stays a native augmented assignment on `_write_(x)[k]`: `x` and `k` are
      evaluated once (RestrictedPython refuses it; rewriting to `x[k] = x[k] op v` evaluated
      them twice). The read is the plain subscript `_getitem_` would do (it checks nothing).
    - `obj.a op= v` becomes `_aug_attr_(obj, 'a', op, lambda: v)`: `obj` once, guarded read,
      then `v`, then the write guard; the same order Python uses.
    - `printed` is an ordinary variable name, not RestrictedPython's print collector.
    - bare `except:` becomes `except Exception:` so the sandbox's interrupt cannot be swallowed.
    - `class` is refused at compile time with what to use instead (no `__build_class__` is
      handed out, so it used to fail at run time as "__build_class__ not found").
    """

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        if name == "printed":
            return
        super().check_name(node, name, allow_magic_methods)

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id == "printed":
            return node
        return super().visit_Name(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        if isinstance(node.target, ast.Subscript):
            return self.node_contents_visit(node)  # target becomes `_write_(x')[k']` (Store)
        if isinstance(node.target, ast.Attribute):
            target = node.target
            load = ast.Attribute(value=target.value, attr=target.attr, ctx=ast.Load())
            checked = self.visit(ast.copy_location(load, target))
            if not isinstance(checked, ast.Call):  # refused (error recorded): keep the tree sane
                return node
            value = self.visit(node.value)
            thunk = ast.Lambda(
                args=ast.arguments(
                    posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]
                ),
                body=value,
            )
            call = ast.Call(
                func=ast.Name("_aug_attr_", ast.Load()),
                args=[
                    checked.args[0],
                    ast.Constant(target.attr),
                    ast.Constant(_OP_SYMBOLS[type(node.op)]),
                    thunk,
                ],
                keywords=[],
            )
            new = ast.Expr(value=call)
            return ast.fix_missing_locations(ast.copy_location(new, node))
        return super().visit_AugAssign(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self.error(
            node,
            f"class {node.name}: class definitions are not available in the sandbox; use "
            "functions with dicts, tuples or collections.namedtuple",
        )
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> Any:
        if node.type is None:
            node.type = ast.copy_location(ast.Name(id="Exception", ctx=ast.Load()), node)
        return super().visit_ExceptHandler(node)


_OP_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+=",
    ast.Sub: "-=",
    ast.Mult: "*=",
    ast.Div: "/=",
    ast.FloorDiv: "//=",
    ast.Mod: "%=",
    ast.Pow: "**=",
    ast.LShift: "<<=",
    ast.RShift: ">>=",
    ast.BitOr: "|=",
    ast.BitXor: "^=",
    ast.BitAnd: "&=",
    ast.MatMult: "@=",
}


#: Sources up to this size keep their compiled code (see `compile_user_code`).
_CACHE_SOURCE_CHARS = 16_384


def compile_user_code(source: str) -> tuple[types.CodeType | None, list[str]]:
    """Parse and restricted-compile with the sandbox's transformer; returns (code, errors).

    The restricting transform is a Python-level AST walk, about 0.3 ms even for one line: most of
    a warm trivial call. Agents and loops re-send the same small snippets (`print(len(context))`,
    a helper re-run on the next chunk), so small sources keep their code object; a code object is
    immutable and the transform depends on nothing but the source.
    """
    if len(source) <= _CACHE_SOURCE_CHARS:
        code, errors = _compile_cached(source)
        return code, list(errors)
    return _compile(source)


@functools.lru_cache(maxsize=256)
def _compile_cached(source: str) -> tuple[types.CodeType | None, tuple[str, ...]]:
    code, errors = _compile(source)
    return code, tuple(errors)


def _compile(source: str) -> tuple[types.CodeType | None, list[str]]:
    try:
        tree = ast.parse(source, filename=USER_FILENAME, mode="exec")
    except SyntaxError as exc:
        return None, [f"SyntaxError: {exc.msg} (line {exc.lineno})"]
    result = compile_restricted_exec(tree, filename=USER_FILENAME, policy=_Policy)
    if result.errors:
        return None, list(result.errors)
    return result.code, []


_BUILTIN_NAMES = [
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytes",
    "callable",
    "chr",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "oct",
    "ord",
    "pow",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
]
_EXCEPTION_NAMES = [
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "Exception",
    "ImportError",
    "IndexError",
    "KeyError",
    "LookupError",
    "NameError",
    "NotImplementedError",
    "OverflowError",
    "RecursionError",
    "RuntimeError",
    "StopIteration",
    "TypeError",
    "UnicodeError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "ValueError",
    "ZeroDivisionError",
    "MemoryError",
]


def _apply(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def build_globals(
    printer: CappedPrinter, rng: _random.Random, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The namespace user code runs in: guards, allow-listed builtins, importer, extras."""
    import builtins

    safe: dict[str, Any] = {n: getattr(builtins, n) for n in _BUILTIN_NAMES + _EXCEPTION_NAMES}
    safe.update({"None": None, "True": True, "False": False})
    safe["__import__"] = make_importer(rng)
    return {
        "__builtins__": safe,
        "__name__": SANDBOX_MODULE,
        "__metaclass__": type,
        "_getattr_": guarded_getattr,
        # RestrictedPython's default_guarded_getitem checks nothing either; the C one is faster.
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": guarded_write,
        "_aug_attr_": aug_attr,
        "_inplacevar_": inplacevar,
        "_apply_": _apply,
        "_print_": printer,
        **extra,
    }
