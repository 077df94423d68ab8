"""notifier: alarms, events and log lines in; the e-mails people must read out."""

__version__ = "0.1.0"
