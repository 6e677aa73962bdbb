"""The query CLI: answer "why did costs spike", "what did the bot say", "which user spends most",
"what is p95 latency per model" and "give me a CSV" from the terminal, over SQLite or Postgres.

``collector.query.cli.register(subparsers)`` adds the commands to the main ``genai-collector``
parser; ``python -m collector.query`` runs them standalone.
"""
