"""The course's build tools, importable as a package from the repository root.

``python -m scripts.make_book``, ``python -m scripts.browser_test_book`` and the other commands
of the ``Makefile``; ``scripts.nbsave`` is the pytest plugin (``-p scripts.nbsave``) that keeps
nbval's notebook executions for the book.
"""
