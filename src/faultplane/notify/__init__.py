"""Notifications of injection events to webhooks (`faultplane serve --notify URL`).

`targets` parses where to send and in which format, `events` says what happened,
`formats` renders it (generic JSON, Slack incoming webhook), `courier` delivers to one
target with retries, `notifier` feeds every courier from the scheduler's watch.
"""
