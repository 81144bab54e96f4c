"""The dashboard: `faultplane serve --web-listen HOST:PORT`.

A client of the server's own operator API over loopback, with the logged-in user's
credentials, so that principals, roles, refusals and the audit are exactly the API's:
the dashboard never decides who may abort, the gate does, and the audit says who did.
"""
