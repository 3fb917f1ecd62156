"""Alert notifications: rules judged on closed windows, delivered to Slack and webhooks.

- `evaluate`: pure rule evaluation with dedupe, cooldown and resolve state per rule/scope.
- `budget`: pure month-to-date budget levels.
- `render`: Slack Block Kit messages, webhook bodies and their HMAC signature.
- `delivery`: one alert to one destination, with retries, backoff, jitter and Retry-After.
- `notifier`: the core both drivers share: evaluate -> claim in the ledger -> deliver.
- `kafka` / `embedded`: thin drivers (windows and anomalies topics; the embedded task).
"""
