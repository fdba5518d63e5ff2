"""pytest plugin, loaded first (``-p light_imports`` in ``pyproject.toml``): keep an optional
import out of every pytest process.

nbval reads notebooks with nbformat, which imports jsonschema; when ``rfc3987-syntax`` is
installed (JupyterLab's jupyter-events pulls it in), jsonschema builds 38 Lark parsers for RFC 3987
at import, 1.3 s of CPU in the pytest process and in each of its xdist workers. They check only
the ``iri`` and ``iri-reference`` string formats, which nbformat's notebook schema never uses, and
jsonschema treats the package as optional (it skips those formats on an ImportError). Marking it
absent in ``sys.modules`` before nbval's plugin loads is that ImportError.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)
