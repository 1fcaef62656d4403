"""The shared web base of the consoles: the officer's console on a node, the operator's on the coordinator.

Server-rendered pages (Starlette, Jinja2, served by uvicorn in a thread of the process), no
JavaScript. One module per concern:

- ``settings``: the ``[console]`` config table (``listen`` on loopback unless ``remote = true``
  with TLS), strict like every table (protocols/config_tables.py);
- ``signin``: the one-time sign-in token (written 0600 to the state folder, printed at start),
  certificate sign-in (mutual TLS with a federation certificate), and sessions with their CSRF token;
- ``app``: ``Console``, the app factory: pages need a session, actions (POST) need a session and
  the session's CSRF token and are audited with the signed-in person; error pages never show a trace;
- ``charts``: server-side SVG line charts;
- ``server``: ``ConsoleServer``, uvicorn on a socket bound before start, stopped with ``close()``.

docs/console.md is the user's guide; docs/security.md says what each party learns.
"""
