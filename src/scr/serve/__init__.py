"""``scr serve``: the processes of one instance and their wiring.

``supervisor`` binds one listening socket per edge, forks the children, watches them and
restarts one that dies, backing off one that keeps dying. ``writer`` commits and holds the
control plane; each ``edge`` answers HTTP, does ``POST /v1/events`` up to the canonical
bytes and hands the records over (``appends``), passing every other request to the writer;
each ``reader`` runs its destinations, woken after each commit (``readers``), their writes
joining the writer's groups (``writes``). ``frames`` carries the calls between them, and
``status`` is what the supervisor tells the others of the set (for ``/healthz``, ``/readyz``,
``/metrics``). Every child sets its process title, so ``ps`` tells them apart.
"""
