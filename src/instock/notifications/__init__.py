"""Notifications: email, SMS and Slack messages driven by events, sent once in effect per
(recipient, reason, subject), checked against consent, quiet hours and rate limits at send time."""
