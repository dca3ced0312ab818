"""HTML reports and leaderboard pages rendered from run directories (Jinja templates in ``templates/``).
Not built yet: the runner writes results.json and predictions/*.jsonl, which the reports will read."""
