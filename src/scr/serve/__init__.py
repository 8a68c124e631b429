"""``scr serve``: the processes of one instance and their wiring.

The supervisor (``scr: supervisor``) binds the listening socket, starts its children, watches
them and restarts one that dies, backing off one that keeps dying. Each child sets its
process title so ``ps`` tells them apart; the HTTP child answers for the whole set
(``/healthz``, ``/readyz``, ``/metrics``) from the status file the supervisor keeps.
"""
