"""Notifications (spec §11): ``messages`` builds each message's payload and Slack blocks
from what a snapshot or a run caused; ``deliver`` sends the outbox's rows to Slack or to
signed webhooks. The outbox rows themselves are written by ``store.outbox``, in the
snapshot's own transaction; the delivery log is read by ``report.notifications``."""
