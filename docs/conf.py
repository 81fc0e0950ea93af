"""Sphinx configuration of the server_framework documentation (``make docs``).

The build runs with ``-W --keep-going``: any warning fails it. Choices made here so that this
stays meaningful *and* clean:

- **Offline first.** This project is built on machines without network access (CI included),
  and intersphinx would warn for every inventory it cannot fetch. So the mapping to the
  Python, trio, msgspec and structlog docs is used only when ``SPHINX_INTERSPHINX=1`` is set
  (``SPHINX_INTERSPHINX=1 make docs`` on a machine with network access). Without it,
  references to those projects render as plain code, with no warning and no link.
- **References to our own API are resolved, not nitpicked.** ``nitpicky`` is off: type hints
  name third-party and private classes (``socket.socket``, ``trio.Nursery``, ``TypeVar`` s)
  that have no page here. Our docstrings write `name` (single backticks) for cross-references,
  so ``default_role`` is ``py:obj``. Names re-exported by a package (``server_framework.TCPClient``
  is ``server_framework.clients.TCPClient``) are documented once, at the path listed in
  :data:`CANONICAL`, and :func:`resolve_reexport` points references to the other path there
  (and resolves `AsyncBackend.run_in_thread`-style names when only one object fits).
- **Every public name appears once.** The API pages list objects explicitly (grouped for
  readers, not alphabetically); ``tests/functional/test_docs_build.py`` checks that every name
  in the packages' ``__all__`` is documented.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TypeVar

import sphinx_autodoc_typehints
from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.deprecation import RemovedInSphinx10Warning
from sphinx.environment import BuildEnvironment
from sphinx.util.docstrings import prepare_docstring

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import server_framework  # noqa: E402  (after the path is set, for a build from a bare checkout)

# sphinx-autodoc-typehints 3.6 still calls an API that Sphinx 10 removes: its deprecation warning
# (a Python warning, not a Sphinx one) would be printed once per docstring. Not ours to fix.
warnings.filterwarnings(
    "ignore", category=RemovedInSphinx10Warning, module=r"sphinx_autodoc_typehints(\.|$)"
)

# -- project -----------------------------------------------------------------------------------

project = "server_framework"
author = "server_framework developers"
copyright = "server_framework developers"
try:
    release = importlib.metadata.version("server-framework")
except importlib.metadata.PackageNotFoundError:  # not installed: a build from a bare checkout
    release = "0.1.0.dev0"
version = release

# -- general -----------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # our docstrings are Google style (Args:, Returns:, Raises:)
    "sphinx_autodoc_typehints",  # after napoleon, so it sees the converted fields
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_design",  # tabs (asyncio / trio / backend API), cards, grids
    "myst_parser",  # architecture.md, written in Markdown for GitHub, is included as is
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# examples/ holds code, included into pages with literalinclude; never pages of its own.
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]
default_role = "py:obj"
nitpicky = False
pygments_style = "friendly"
pygments_dark_style = "monokai"

# -- autodoc -----------------------------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True  # show DEFAULT_MAX_CONNECTIONS, not 10000
autodoc_inherit_docstrings = True
autoclass_content = "class"  # the class docstring holds Args: for the constructor

napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" as :ivar: fields, not attribute directives: autodoc may document the same
# attribute from its annotation or doc comment, and two descriptions of one object are an error.
napoleon_use_ivar = True
napoleon_use_rtype = False
# Our awaitables say what cancellation does, trio-style, in a section of their own.
napoleon_custom_sections = ["Cancellation"]

typehints_fully_qualified = False
# Types go in the signatures (``encode(obj: SendT) -> bytes``), as a reader of the code sees
# them; the description lists the parameters that have something to say (their Args: entry).
typehints_use_signature = True
typehints_use_signature_return = True
typehints_document_rtype = False
always_document_param_types = False


def format_typevar(annotation: Any, config: Any = None) -> str | None:
    """Show a type variable as its name (``SendT``), not as ``TypeVar(SendT)``.

    (sphinx-autodoc-typehints calls it with ``config`` for descriptions, without for
    signatures.)
    """
    if isinstance(annotation, TypeVar):
        return annotation.__name__
    return None  # sphinx-autodoc-typehints' own formatting


typehints_formatter = format_typevar

# sphinx-autodoc-typehints evaluates annotations; names imported only under TYPE_CHECKING (kept
# out of the runtime import graph on purpose, see docs/architecture.md) cannot be resolved, and
# the annotation is then shown as written. That is the right rendering, not a problem.
suppress_warnings = [
    "sphinx_autodoc_typehints.forward_reference",
    # typehints_formatter is a function, which Sphinx cannot pickle into its environment
    # cache: an incremental build then rereads every page. (make docs takes ~10 s anyway.)
    "config.cache",
]

# -- intersphinx (see the module docstring: only with SPHINX_INTERSPHINX=1) ----------------------

INTERSPHINX_TARGETS = {
    "python": ("https://docs.python.org/3", None),
    "trio": ("https://trio.readthedocs.io/en/stable", None),
    "msgspec": ("https://jcristharif.com/msgspec", None),
    "structlog": ("https://www.structlog.org/en/stable", None),
}
intersphinx_mapping = INTERSPHINX_TARGETS if os.environ.get("SPHINX_INTERSPHINX") == "1" else {}
intersphinx_timeout = 10

# -- HTML --------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"server_framework {release}"
html_short_title = "server_framework"
html_static_path: list[str] = []
html_theme_options: dict[str, Any] = {
    "navigation_with_keys": True,
    "top_of_page_buttons": [],
}
html_show_sourcelink = False

# -- re-exported names -------------------------------------------------------------------------

#: Packages that re-export names documented elsewhere. A reference to ``package.Name`` (for
#: example ``server_framework.TCPClient``) resolves to where ``Name`` is documented.
REEXPORTING = ("server_framework", "server_framework.threads")

#: Where each object is documented, by identity: its public path in the most specific package.
CANONICAL_PACKAGES = (
    "server_framework.clients",
    "server_framework.backend",
    "server_framework.threads",
    "server_framework.exceptions",
    "server_framework.log",
    "server_framework.servers",
)


def _canonical_names() -> dict[str, str]:
    """``"server_framework.TCPClient" -> "server_framework.clients.TCPClient"``, and so on."""
    where: dict[int, str] = {}
    for package in CANONICAL_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            where.setdefault(id(getattr(module, name)), f"{package}.{name}")
    aliases: dict[str, str] = {}
    for package in REEXPORTING:
        module = importlib.import_module(package)
        for name in module.__all__:
            target = where.get(id(getattr(module, name)))
            if target is not None and target != f"{package}.{name}":
                aliases[f"{package}.{name}"] = target
    return aliases


CANONICAL = _canonical_names()


def _unique_suffix_match(domain: Any, target: str) -> str | None:
    """The one documented Python object whose full name ends with ``.target``, if just one."""
    suffix = "." + target
    matches = [name for name in domain.objects if name.endswith(suffix)]
    return matches[0] if len(matches) == 1 else None


def resolve_reexport(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    """Resolve what the Python domain could not, when it can only mean one of our objects.

    - A re-exported name (``server_framework.run``) resolves to where it is documented
      (``server_framework.backend.run``).
    - A name written relative to its module (`ThreadsPortal` in ``server_framework.threads``,
      `AsyncBackend.run_in_thread` anywhere) resolves to the one documented object whose full
      name ends with it. Ambiguous names stay unresolved (plain code, no warning).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    domain: Any = env.get_domain("py")
    module = node.get("py:module")
    canonical = CANONICAL.get(target) or (module and CANONICAL.get(f"{module}.{target}"))
    if not canonical:
        canonical = _unique_suffix_match(domain, target)
    if not canonical:
        return None
    for role in ("class", "func", "meth", "attr", "obj", "data", "exc"):
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, role, canonical, node, contnode
        )
        if resolved is not None:
            return resolved  # type: ignore[no-any-return]
    return None


# -- docstring hygiene -------------------------------------------------------------------------


def tidy_docstring(  # noqa: PLR0917  (Sphinx's event signature)
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Before napoleon and sphinx-autodoc-typehints see a docstring.

    - End it with a blank line, so that nothing appended to it joins its last paragraph.
    - Remember an attribute's first line, for :func:`untype_attribute`.
    - ``"\\r\\n"`` written in a non-raw docstring is a real CR LF, which splits a line in two
      mid-literal: show the escape as written instead. (Such a docstring is a bug of its own,
      reported to its module's owner: ``help()`` shows it broken too.)
    """
    if what in _ATTRIBUTE_KINDS and lines:
        _first_lines[name] = lines[0]
    doc = getattr(obj, "__doc__", None)
    if isinstance(doc, str) and "\r" in doc:
        lines[:] = prepare_docstring(doc.replace("\r\n", "\\r\\n").replace("\r", "\\r"))
    if lines and lines[-1].strip():
        lines.append("")


#: What napoleon reads as an "attribute docstring", where ``word: text`` means ``type: text``.
_ATTRIBUTE_KINDS = ("attribute", "data", "property")
#: The first docstring line of each attribute, as written (see untype_attribute).
_first_lines: dict[str, str] = {}


def untype_attribute(  # noqa: PLR0917  (Sphinx's event signature)
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """After napoleon: undo its reading of "The server's address: ..." as a type.

    Napoleon takes the text before the first colon of an attribute's or property's docstring
    for its type (Google style's ``int: The count``). Our docstrings never use that form, but
    many start with a phrase and a colon; this puts the phrase back where it was written.
    """
    first = _first_lines.pop(name, None)
    if what not in _ATTRIBUTE_KINDS or first is None:
        return
    for index, line in enumerate(lines):
        if line.startswith(":type: ") and first.startswith(line.removeprefix(":type: ") + ":"):
            del lines[index]
            if index > 0 and not lines[index - 1].strip():
                del lines[index - 1]
            rest = first.partition(":")[2].strip()
            for position, text in enumerate(lines):
                if text.strip() == rest:
                    lines[position] = first
                    break
            return


def separate_rtype(  # noqa: PLR0917  (Sphinx's event signature)
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """After sphinx-autodoc-typehints: never let its ``:rtype:`` end a literal block.

    It may insert ``:rtype:`` right after an indented ``Example::`` block (its line arithmetic
    goes wrong after napoleon joins a multi-line ``Raises:`` entry), and reST then warns that
    the literal block "ends without a blank line".
    """
    for index in range(len(lines) - 1, 0, -1):
        if lines[index].startswith(":rtype:") and lines[index - 1].startswith((" ", "\t")):
            lines.insert(index, "")


def class_signature(  # noqa: PLR0917  (Sphinx's event signature)
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """A class's signature is its constructor's, without ``-> None``.

    sphinx-autodoc-typehints shows return types in signatures (``typehints_use_signature_return``)
    and does not leave ``__init__``'s out of a class signature. This runs first, asks it for the
    signature, and trims that; for everything else it lets it do its job.
    """
    if what not in ("class", "exception"):
        return None
    result = sphinx_autodoc_typehints.process_signature(
        app, what, name, obj, options, signature, return_annotation
    )
    if result is None:
        return None
    text, returns = result
    return text.removesuffix(" -> None"), returns


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve_reexport)
    # Before napoleon and sphinx-autodoc-typehints (default priority 500).
    app.connect("autodoc-process-docstring", tidy_docstring, priority=400)
    app.connect("autodoc-process-docstring", separate_rtype, priority=900)
    app.connect("autodoc-process-docstring", untype_attribute, priority=900)
    # Before sphinx-autodoc-typehints' own handler: the first handler to answer wins.
    app.connect("autodoc-process-signature", class_signature, priority=400)
    assert server_framework.__all__  # imported above: fail early if the package is broken
    return {"parallel_read_safe": True}
