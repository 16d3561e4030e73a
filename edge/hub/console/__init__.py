"""The hub's console in the browser, and its read API: ``edge hub serve``.

    browser ----- login (session cookie, CSRF on every form) --> pages (server-rendered)
    machine ----- Authorization: Bearer TOKEN ------------------> /api/v1/...
    pages, API -> edge.hub.console.reads -> aggregates kept by the collector, results

Every page and API call needs a user (``users_file``, argon2 hashes); every asset
is shipped in this package (no CDN), and pages work without JavaScript.
"""
