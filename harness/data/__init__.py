"""Dataset access shared by the task plugins (Hugging Face mirror snapshots)."""
